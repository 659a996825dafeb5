"""`alexnet-dali verify` and the cheap shard check at train/eval start: each kind of damage is
found and named (shard, and sample key where there is one); an intact folder passes."""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from helpers import overwrite_middle_of_jpeg

from alexnet_dali.cli import main
from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.errors import CorruptSampleError, DataError
from alexnet_dali.loader.eval import build_eval_loader
from alexnet_dali.pipelines.spec import load_shard_set
from alexnet_dali.tools.verify import verify

LOADER = LoaderConfig(num_threads=1, prefetch=1, shuffle_buffer=1)


@pytest.fixture
def shards(shard_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the preprocessed fixture (tests damage it)."""
    return Path(shutil.copytree(shard_dataset, tmp_path / "shards"))


def strip_sizes(root: Path) -> None:
    """Make the manifest look like one written before shard sizes were recorded."""
    manifest = json.loads((root / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for entry in split["shards"]:
            entry.pop("size")
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_intact_shards_pass_with_and_without_decode(shards: Path) -> None:
    for decode in (False, True):
        checks, problems = verify(shards, decode=decode, workers=2, progress=False)
        assert problems == [] and len(checks) == 8  # 6 train + 2 val shards
    manifest = json.loads((shards / "manifest.json").read_text())
    assert all(e["size"] == (shards / e["tar"]).stat().st_size
               for split in manifest["splits"].values() for e in split["shards"])


def test_overwritten_jpeg_is_caught_although_pillow_and_dali_accept_it(shards: Path) -> None:
    """The issue's case: only libjpeg *warnings*, which strict decoding turns into an error."""
    tar = shards / "train" / "train-000002.tar"
    key, jpeg = overwrite_middle_of_jpeg(tar, sample=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Image.open(io.BytesIO(jpeg)) as im:  # Pillow decodes it without complaint
            im.load()
    _, problems = verify(shards, decode=False, progress=False)
    assert [str(p) for p in problems] == [f"{tar}: sha256 differs from manifest.json (the bytes "
                                          "changed since preprocess wrote them)"]
    _, problems = verify(shards, decode=True, progress=False)
    assert len(problems) == 2 and problems[1].key == key
    assert "does not decode cleanly (Corrupt JPEG data" in problems[1].reason
    assert dali_decodes(jpeg).shape == (256, 256, 3)  # DALI too: it only prints the warning


def dali_decodes(jpeg: bytes) -> np.ndarray:
    """Decode one JPEG with DALI's CPU decoder (what training uses without a GPU)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def decode():
        data = fn.external_source(source=lambda: [np.frombuffer(jpeg, np.uint8)],
                                  dtype=types.UINT8)
        return fn.decoders.image(data, device="cpu")

    pipe = decode()
    pipe.build()
    return np.asarray(pipe.run()[0][0])


def test_every_kind_of_damage_is_listed(shards: Path) -> None:
    train = shards / "train"
    truncated = train / "train-000001.tar"
    os.truncate(truncated, truncated.stat().st_size // 2)
    (train / "train-000003.tar").unlink()
    index = shards / "val" / "val-000000.idx"
    lines = index.read_text().split("\n")
    lines[3] = lines[3].replace(" ", "  ", 1)
    index.write_text("\n".join(lines))
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][4]["samples"] += 1
    (shards / "manifest.json").write_text(json.dumps(manifest))
    _, problems = verify(shards, progress=False)
    text = "\n".join(map(str, problems))
    assert f"{truncated}: {truncated.stat().st_size} bytes, manifest.json says" in text
    assert f"{truncated}: not a readable tar after" in text
    assert f"{train / 'train-000003.tar'}: missing" in text
    assert f"{index}: line 4" in text or f"{index}: malformed" in text
    assert f"{train / 'train-000004.tar'}: holds 16 samples, manifest.json says 17" in text
    strip_sizes(shards)  # an old manifest: the truncated tar is still found, by sha256 and reading
    _, problems = verify(shards, progress=False)
    assert {str(p) for p in problems if p.path == str(truncated)} == {
        f"{truncated}: sha256 differs from manifest.json (the bytes changed since preprocess "
        "wrote them)",
        next(str(p) for p in problems if "not a readable tar" in str(p))}


def test_labels_out_of_range_are_named_with_decode(shards: Path) -> None:
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["classes"] = manifest["classes"][:2]  # labels 2 and 3 are now out of range
    (shards / "manifest.json").write_text(json.dumps(manifest))
    _, problems = verify(shards, decode=True, progress=False)
    assert problems and all("outside 0..1" in p.reason and p.key for p in problems)


def test_cli_exit_status_and_listing(shards: Path) -> None:
    runner = CliRunner()
    clean = runner.invoke(main, ["verify", str(shards), "--quiet", "--workers", "1"])
    assert clean.exit_code == 0 and "all 8 shards are intact" in clean.output
    key, _ = overwrite_middle_of_jpeg(shards / "val" / "val-000001.tar", sample=2)
    bad = runner.invoke(main, ["verify", str(shards), "--decode", "--quiet", "--workers", "2"])
    assert bad.exit_code == 1
    assert f"val-000001.tar: sample {key}: JPEG does not decode cleanly" in bad.output
    assert "1 of 8 shards have problems (2 found)" in bad.output


def test_train_start_names_a_missing_or_cut_short_tar(shards: Path) -> None:
    tar = shards / "val" / "val-000001.tar"
    os.truncate(tar, tar.stat().st_size - 1000)
    with pytest.raises(DataError, match=rf"{tar}: \d+ bytes, manifest.json says \d+ .*"
                                           "alexnet-dali verify"):
        load_shard_set(shards, "val")
    tar.unlink()
    with pytest.raises(DataError, match=rf"{tar}: missing"):
        load_shard_set(shards, "val")


def test_train_refuses_a_cut_short_tar_in_one_line_before_any_run_dir(
        shards: Path, tmp_path: Path) -> None:
    tar = shards / "train" / "train-000002.tar"
    os.truncate(tar, tar.stat().st_size - 1000)
    run = tmp_path / "run"
    runner = CliRunner()
    trained = runner.invoke(main, ["train", str(shards), "--run-dir", str(run), "--epochs", "1",
                                   "--device", "cpu"])
    assert trained.exit_code == 2, trained.output
    line, = trained.output.strip().splitlines()
    assert line.startswith(f"error: {tar}: ") and "alexnet-dali verify" in line
    assert not run.exists()  # nothing to clean up: refused before the run dir was made


def test_a_cut_short_tar_is_named_as_the_tar_without_recorded_sizes(shards: Path) -> None:
    """DALI blames the index ("Malformed index file"); the loader names the tar instead."""
    strip_sizes(shards)
    tar = shards / "val" / "val-000000.tar"
    os.truncate(tar, tar.stat().st_size // 2)
    loader = build_eval_loader(shards, split="val", loader=LOADER, augment=AugmentConfig(),
                               batch_size=4, rank=0, world_size=1, device=torch.device("cpu"))
    with pytest.raises(CorruptSampleError, match=rf"^{tar}: shorter than its index val-000000"):
        list(loader)
