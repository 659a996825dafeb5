"""Official tars downloaded in pieces into one OUT: train alone (no devkit, so no class words)
and val + devkit, in either order, give the shards and the class words of one full run; what
cannot be merged is refused before anything is converted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from miniature import WNIDS, WORDS, make_miniature, write_official

from alexnet_dali.errors import DataError
from alexnet_dali.tools import preprocess as pp

CONFIG = pp.PreprocessConfig(shard_size=4, workers=1, seed=3)


def run(src: Path, out: Path, config: pp.PreprocessConfig = CONFIG, **kwargs):
    notes: list[str] = []
    manifest = pp.preprocess(src, out, config, progress=False, notify=notes.append, **kwargs)
    return manifest, notes


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.glob("*/*")) if p.suffix in (".tar", ".idx")}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    mini, base = make_miniature(), tmp_path_factory.mktemp("pieces")
    return {"full": write_official(mini, base / "full"),
            "train": write_official(mini, base / "train", parts=("train",)),
            "train+devkit": write_official(mini, base / "train_devkit", parts=("train", "devkit")),
            "val+devkit": write_official(mini, base / "val_devkit", parts=("val", "devkit"))}


@pytest.fixture(scope="module")
def full(sources, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("full")
    run(sources["full"], out)
    return shard_bytes(out)


WITH_WORDS = [{"id": i, "name": w, "words": WORDS[w]} for i, w in enumerate(WNIDS)]


def test_train_alone_then_val_with_the_devkit(sources, full, tmp_path):
    first, notes = run(sources["train"], tmp_path)
    assert [c["words"] for c in first["classes"]] == [""] * len(WNIDS)
    assert any("class names are WNIDs only" in n for n in notes)
    manifest, _ = run(sources["val+devkit"], tmp_path)
    assert set(manifest["splits"]) == {"train", "val"} and manifest["classes"] == WITH_WORDS
    assert shard_bytes(tmp_path) == full
    again, _ = run(sources["train+devkit"], tmp_path)  # the devkit added: words, nothing redone
    assert again["classes"] == WITH_WORDS and shard_bytes(tmp_path) == full


def test_val_with_the_devkit_then_train_alone(sources, full, tmp_path):
    run(sources["val+devkit"], tmp_path)
    manifest, notes = run(sources["train"], tmp_path)
    assert set(manifest["splits"]) == {"train", "val"} and manifest["classes"] == WITH_WORDS
    assert shard_bytes(tmp_path) == full
    assert any("class words from the shards already in OUT" in n for n in notes)
    assert not any("WNIDs only" in n for n in notes)


def test_other_words_are_refused_naming_both_before_converting(sources, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{w} {'goldfish' if i == 0 else WORDS[w]}\n"
                             for i, w in enumerate(WNIDS)))
    out = tmp_path / "out"
    run(sources["val+devkit"], out)
    with pytest.raises(DataError, match=rf"class {WNIDS[0]}: SRC says 'goldfish' but the shards "
                                        rf"already in {out} says '{WORDS[WNIDS[0]]}'"):
        run(sources["train"], out, class_names=names)
    assert not (out / "train").exists()


def test_other_settings_are_refused_before_converting(sources, tmp_path):
    run(sources["train"], tmp_path)
    other = replace(CONFIG, image=replace(CONFIG.image, quality=80))
    with pytest.raises(DataError, match=r"/train: made with other settings \(quality\)"):
        run(sources["val+devkit"], tmp_path, other)
    assert not (tmp_path / "val").exists()
