"""`bench preprocess`: preprocess throughput on generated photo-sized JPEGs, draft vs no draft.

The images have photo-like spectra (smooth structure plus fine noise), so JPEG sizes and decode
cost resemble real photos. Each configuration runs the real `preprocess` (decode, resize, encode,
shard writing) on the same files, after one untimed warm-up pass that fills the page cache.
"""

from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess
from alexnet_dali.tools.shards import iter_shard

SIZES = ((500, 375), (2000, 1500))


@dataclass(frozen=True)
class BenchRow:
    """One source size: images, source MB, seconds without and with draft, output difference."""

    size: tuple[int, int]
    images: int
    source_mb: float
    seconds_full: float
    seconds_draft: float
    mean_abs_diff: float


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """RGB image with smooth coarse structure, mid-scale detail and fine noise."""
    layers = np.zeros((height, width, 3))
    for cells, amplitude in ((4, 70.0), (24, 35.0), (120, 15.0)):
        small = rng.normal(0, amplitude, size=(cells, max(cells * width // height, 1), 3))
        grid = Image.fromarray(np.clip(small + 128, 0, 255).astype(np.uint8))
        layers += np.asarray(grid.resize((width, height), Image.BICUBIC), np.float64) - 128
    layers += rng.normal(0, 4.0, size=layers.shape)
    return Image.fromarray(np.clip(layers + 128, 0, 255).astype(np.uint8))


def write_images(folder: Path, size: tuple[int, int], count: int, seed: int) -> float:
    """`count` JPEGs (quality 90) in folder/train/cls/; returns their total MB."""
    target = folder / "train" / "cls"
    target.mkdir(parents=True)
    total = 0
    for i in range(count):
        rng = np.random.default_rng([seed, size[0], i])
        w, h = size if i % 2 == 0 else size[::-1]  # landscape and portrait
        buf = io.BytesIO()
        photo_like(rng, w, h).save(buf, format="JPEG", quality=90)
        (target / f"img_{i:05d}.JPEG").write_bytes(buf.getvalue())
        total += len(buf.getvalue())
    return total / 1e6


def timed_run(src: Path, out: Path, config: PreprocessConfig) -> float:
    """Seconds of one preprocess run into a fresh folder."""
    start = time.perf_counter()
    preprocess(src, out, config, progress=False)
    return time.perf_counter() - start


def pixels(out: Path) -> np.ndarray:
    """All output images of a run, in shard order, as one float array."""
    arrays = []
    for tar in sorted((out / "train").glob("*.tar")):
        for _, members in iter_shard(tar):
            arrays.append(np.asarray(Image.open(io.BytesIO(members["jpg"])), np.float64))
    return np.stack(arrays)


def bench_size(work: Path, size: tuple[int, int], count: int, config: PreprocessConfig,
               repeats: int) -> BenchRow:
    """Time draft and no-draft preprocess runs, interleaved, best of `repeats` each."""
    src = work / f"src_{size[0]}x{size[1]}"
    source_mb = write_images(src, size, count, seed=0)
    full = replace(config, image=replace(config.image, draft=False))
    draft = replace(config, image=replace(config.image, draft=True))
    timed_run(src, work / f"warmup_{size[0]}", full)
    times = {"full": [], "draft": []}
    for r in range(repeats):
        for name, cfg in (("full", full), ("draft", draft)):
            times[name].append(timed_run(src, work / f"{name}_{size[0]}_{r}", cfg))
    diff = np.abs(pixels(work / f"full_{size[0]}_0") - pixels(work / f"draft_{size[0]}_0"))
    return BenchRow(size, count, source_mb, min(times["full"]), min(times["draft"]),
                    float(diff.mean()))


def run_bench(counts: tuple[int, int], workers: int, repeats: int,
              config: PreprocessConfig = PreprocessConfig()) -> list[BenchRow]:
    """One row per source size in `SIZES`, with `counts[i]` images of `SIZES[i]`."""
    config = replace(config, workers=workers)
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        return [bench_size(Path(tmp), size, count, config, repeats)
                for size, count in zip(SIZES, counts)]


def format_table(rows: list[BenchRow], workers: int) -> str:
    """Markdown table of the rows."""
    lines = [f"preprocess, {workers} worker(s), best of runs; img/s = source images per second",
             "| source size | images | source MB | no draft img/s | draft img/s | speedup "
             "| mean abs diff (0-255) |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row.size[0]}x{row.size[1]} | {row.images} | {row.source_mb:.1f} "
            f"| {row.images / row.seconds_full:.1f} | {row.images / row.seconds_draft:.1f} "
            f"| {row.seconds_full / row.seconds_draft:.2f}x | {row.mean_abs_diff:.2f} |")
    return "\n".join(lines)
