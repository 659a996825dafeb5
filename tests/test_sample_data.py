"""sample-data: layout, determinism, varied sizes, odd files, and the CLI commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from alexnet_dali.cli import main
from PIL import ImageDraw

from alexnet_dali.tools.sample_data import (HARD_SHAPES, ODD_FILES, SampleDataConfig, class_colour,
                                            class_name, draw_hard_shape, make_hard_image,
                                            make_image, write_sample_data)


def test_layout_sizes_and_determinism(tmp_path):
    config = SampleDataConfig(classes=3, train_per_class=6, val_per_class=2, min_side=150,
                              max_side=1000, seed=11)
    counts = write_sample_data(tmp_path / "a", config)
    write_sample_data(tmp_path / "b", config)
    assert counts == {"train": 18, "val": 6}
    assert (tmp_path / "a" / "synset_words.txt").read_text() == (
        "n00000000 disc\nn00000001 square\nn00000002 triangle\n")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.JPEG"))
    assert len(files) == 24
    assert {f.parts[1] for f in files} == {class_name(i) for i in range(3)}
    sizes = []
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
        with Image.open(tmp_path / "a" / rel) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            sizes.append(img.size)
    assert all(150 <= s <= 1000 for size in sizes for s in size)
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)


def test_other_seed_other_images(tmp_path):
    a = write_sample_data(tmp_path / "a", SampleDataConfig(classes=1, train_per_class=1,
                                                           val_per_class=0, seed=1))
    write_sample_data(tmp_path / "b", SampleDataConfig(classes=1, train_per_class=1,
                                                       val_per_class=0, seed=2))
    rel = Path("train") / class_name(0) / f"{class_name(0)}_00000.JPEG"
    assert a["train"] == 1
    assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "b" / rel).read_bytes()


def test_class_colour_is_present_in_its_images():
    for class_id in range(4):
        rng = np.random.default_rng(class_id)
        pixels = np.asarray(make_image(class_id, 4, rng, 120, 200)).reshape(-1, 3).astype(int)
        distance = np.abs(pixels - np.array(class_colour(class_id, 4))).max(1)
        assert (distance <= 20).mean() > 0.03  # the class shape covers a visible share


def shape_mask(shape: str, side: int = 64) -> np.ndarray:
    mask = Image.new("L", (side, side), 0)
    draw_hard_shape(ImageDraw.Draw(mask), shape, side)
    return np.asarray(mask) > 127


def test_the_hard_shapes_are_sixteen_distinct_masks():
    masks = {shape: shape_mask(shape) for shape in HARD_SHAPES}
    assert len(masks) == 16
    for shape, mask in masks.items():
        assert mask.mean() > 0.25, shape  # drawn large, whatever its kind
    for i, a in enumerate(HARD_SHAPES):
        for b in HARD_SHAPES[i + 1:]:
            assert (masks[a] != masks[b]).mean() > 0.1, (a, b)  # closest: disc, hexagon 0.13


def test_hard_images_draw_colour_and_place_independently_of_the_class():
    """Two images of one class differ in the colour and place of their shape: only the shape
    tells the class (what keeps a linear model on the pixels near chance)."""
    a, b = (np.asarray(make_hard_image(5, np.random.default_rng(seed), 200, 200), dtype=int)
            for seed in (1, 2))
    assert a.shape == b.shape == (200, 200, 3)
    assert np.abs(a - b).mean() > 30


def test_hard_kind_writes_the_hard_shapes_words(tmp_path):
    config = SampleDataConfig(classes=17, train_per_class=1, val_per_class=0, min_side=64,
                              max_side=80, kind="hard")
    assert write_sample_data(tmp_path, config) == {"train": 17, "val": 0}
    words = (tmp_path / "synset_words.txt").read_text().splitlines()
    assert words[9] == "n00000009 hexagon" and words[16] == "n00000016 disc 2"
    result = CliRunner().invoke(main, ["sample-data", str(tmp_path / "cli"), "--kind", "hard",
                                       "--classes", "16", "--train-per-class", "1",
                                       "--val-per-class", "0", "--min-side", "64",
                                       "--max-side", "64", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "synset_words.txt").read_text().splitlines()[15] == (
        "n00000015 arrow")


def test_odd_files_have_their_quirks(tmp_path):
    write_sample_data(tmp_path, SampleDataConfig(classes=2, train_per_class=1, val_per_class=1,
                                                 min_side=60, max_side=90, odd_files=True))
    folder = tmp_path / "train" / class_name(0)
    assert set(ODD_FILES) <= {p.name for p in folder.iterdir()}
    modes = {}
    for name in ("odd_cmyk", "odd_gray", "odd_png", "odd_rgba", "odd_palette", "odd_i16"):
        with Image.open(folder / f"{name}.JPEG") as img:
            modes[name] = (img.format, img.mode)
    assert modes == {"odd_cmyk": ("JPEG", "CMYK"), "odd_gray": ("JPEG", "L"),
                     "odd_png": ("PNG", "RGB"), "odd_rgba": ("PNG", "RGBA"),
                     "odd_palette": ("GIF", "P"), "odd_i16": ("PNG", "I;16")}
    assert (folder / "odd_empty.JPEG").stat().st_size == 0


def test_cli_sample_data_preprocess_pca_stats(tmp_path):
    runner = CliRunner()
    raw, shards = str(tmp_path / "raw"), str(tmp_path / "shards")
    result = runner.invoke(main, ["sample-data", raw, "--classes", "2", "--train-per-class", "6",
                                  "--val-per-class", "2", "--max-side", "200",
                                  "--with-odd-files"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["preprocess", raw, shards, "--workers", "1", "--quiet",
                                  "--shard-size", "5"])
    assert result.exit_code == 0, result.output
    assert "train: found 21 = written 18 + rejected 3" in result.output
    assert "val: found 13 = written 10 + rejected 3" in result.output
    assert result.stderr.splitlines()[0] == (f"layout: folders (detected from {raw}; --layout "
                                             "NAME overrides)")
    assert f"note: class words from {raw}/synset_words.txt" in result.output
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert [(c["name"], c["words"]) for c in manifest["classes"]] == [
        ("n00000000", "disc"), ("n00000001", "square")]
    result = runner.invoke(main, ["pca-stats", shards, "--workers", "1", "--quiet",
                                  "--mean-image"])
    assert result.exit_code == 0, result.output
    pca = json.loads((tmp_path / "shards" / "pca.json").read_text())
    assert pca["images"] == 18 and "eigenvalues" in result.output
    assert (tmp_path / "shards" / "mean_image.npy").exists()


def test_cli_errors_are_clean_messages(tmp_path):
    runner = CliRunner()
    (tmp_path / "empty" / "train").mkdir(parents=True)
    result = runner.invoke(main, ["preprocess", str(tmp_path / "empty"), str(tmp_path / "o")])
    assert result.exit_code != 0 and "no class folders found" in result.output
    result = runner.invoke(main, ["preprocess", str(tmp_path), str(tmp_path / "o"), "--part",
                                  "0/4"])
    assert result.exit_code != 0 and "parts count from 1" in result.output
    result = runner.invoke(main, ["pca-stats", str(tmp_path)])
    assert result.exit_code != 0 and "run `alexnet-dali preprocess" in result.output


def test_every_data_command_help_shows_an_example():
    runner = CliRunner()
    for args in (["sample-data"], ["preprocess"], ["merge-manifest"], ["pca-stats"],
                 ["bench", "preprocess"]):
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, args


def test_sample_data_quiet_prints_only_its_summary(tmp_path):
    args = ["sample-data", str(tmp_path / "raw"), "--classes", "2", "--train-per-class", "2",
            "--val-per-class", "1", "--max-side", "160"]
    loud = CliRunner().invoke(main, args)
    assert loud.exit_code == 0 and "sample-data: 100%" in loud.output
    quiet = CliRunner().invoke(main, [*args, "--quiet"])
    assert quiet.exit_code == 0
    assert quiet.output == f"wrote {tmp_path / 'raw'}: train 4 files, val 2 files\n"
