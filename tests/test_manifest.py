"""The one manifest reader: typed fields from preprocess's real output, one error style."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from alexnet_dali.tools.manifest import MANIFEST_NAME, ClassEntry, ShardEntry, read_manifest
from alexnet_dali.tools.scan import DataError


def test_read_manifest_types_what_preprocess_wrote(shard_dataset: Path) -> None:
    raw = json.loads((shard_dataset / MANIFEST_NAME).read_text())
    manifest = read_manifest(shard_dataset)
    assert manifest.path == shard_dataset / MANIFEST_NAME and manifest.root == shard_dataset
    file_bytes = (shard_dataset / MANIFEST_NAME).read_bytes()
    assert manifest.sha256 == hashlib.sha256(file_bytes).hexdigest()
    assert manifest.classes == tuple(ClassEntry(c["id"], c["name"], c["words"])
                                     for c in raw["classes"])
    assert [c.words for c in manifest.classes] == ["disc", "square", "triangle", "cross"]
    assert set(manifest.splits) == {"train", "val"}
    for name, entry in manifest.splits.items():
        assert entry.samples == raw["splits"][name]["samples"]
        assert entry.shards == tuple(ShardEntry(**s) for s in raw["splits"][name]["shards"])
    assert manifest.settings == raw["settings"] and manifest.totals == raw["totals"]
    assert manifest.raw == raw
    digest = hashlib.sha256()
    for shard in raw["splits"]["train"]["shards"]:
        digest.update(shard["sha256"].encode("ascii"))
    assert manifest.split_fingerprint("train") == digest.hexdigest()


def test_newer_per_class_keys_are_ignored(tmp_path: Path, shard_dataset: Path) -> None:
    raw = json.loads((shard_dataset / MANIFEST_NAME).read_text())
    raw["classes"] = [{**c, "words": "tench", "gloss": "a later field"} for c in raw["classes"]]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(raw))
    assert read_manifest(tmp_path).classes[0] == ClassEntry(0, raw["classes"][0]["name"], "tench")


@pytest.mark.parametrize("content,words", [
    (None, r"manifest\.json: not found; run `alexnet-dali preprocess"),
    ("{not json", r"manifest\.json: not valid JSON .*re-run `alexnet-dali preprocess"),
    ('{"format": "something else"}', r"manifest\.json: not an alexnet-dali-shards manifest"),
    ('{"format": "alexnet-dali-shards", "splits": {"train": {"shards": []}}}',
     r"manifest\.json: split 'train' is malformed"),
    ('{"format": "alexnet-dali-shards", "splits": {"train": {"samples": 1, "shards": [{}]}}}',
     r"manifest\.json: split 'train' shard 0 is malformed"),
])
def test_bad_manifests_are_data_errors_naming_the_file(tmp_path: Path, content: str | None,
                                                       words: str) -> None:
    if content is not None:
        (tmp_path / MANIFEST_NAME).write_text(content)
    with pytest.raises(DataError, match=words):
        read_manifest(tmp_path)


def test_a_missing_split_names_the_splits_there_are(shard_dataset: Path) -> None:
    with pytest.raises(DataError, match=r"no split 'test' \(have \['train', 'val'\]\)"):
        read_manifest(shard_dataset).split("test")


def test_a_missing_manifest_says_what_the_folder_is(tmp_path: Path) -> None:
    """Without a command name (read_manifest's own message) the advice is still exact."""
    from alexnet_dali.tools.manifest import missing_manifest_message

    (tmp_path / "imagenet" / "val" / "n01").mkdir(parents=True)
    (tmp_path / "imagenet" / "val" / "n01" / "a.jpg").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as raised:
        read_manifest(tmp_path / "imagenet")
    assert str(raised.value) == (
        f"{tmp_path}/imagenet/manifest.json: not found: {tmp_path}/imagenet holds source images, "
        f"not shards; run `alexnet-dali preprocess {tmp_path}/imagenet "
        f"{tmp_path}/imagenet-shards` first, then pass {tmp_path}/imagenet-shards")
    assert missing_manifest_message(tmp_path / "empty") == (
        f"{tmp_path}/empty/manifest.json: not found; run `alexnet-dali preprocess SRC "
        f"{tmp_path}/empty` first")
    assert "imagenet-shards` first, then `alexnet-dali eval " in missing_manifest_message(
        tmp_path / "imagenet" / "val", "eval")
