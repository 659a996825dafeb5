"""`bench preprocess`: preprocess throughput and output quality, the Pillow path vs the others.

Paths, each the real `preprocess` (read, decode, resize, encode, shard writing):
- `pillow, folders`: Pillow decodes (draft mode), resizes and encodes, files from a folder tree
  (the code as it was before libjpeg-turbo and libvips);
- `turbo + pillow resize, folders`: libjpeg-turbo via simplejpeg decodes and encodes, Pillow's
  Lanczos resizes;
- `turbo + vips, folders`: libjpeg-turbo and libvips' Lanczos-3 (the default), same files;
- `turbo + vips, official tar`: the same files inside an ILSVRC2012_img_train.tar-style tar;
- `turbo + vips, folders, + PCA sums`: the default with `--pca`, i.e. each written JPEG decoded
  again and its pixels summed for pca.json (the other paths run with `--no-pca`).
The images have photo-like spectra (smooth structure plus fine noise), so JPEG sizes and decode
cost resemble real photos. The paths run alternately, after one untimed warm-up pass each, best
of `repeats`; img/s is source images per wall-clock second, CPU img/s per second of this
process's CPU time (with one worker everything runs in this process, so it is the steadier
number on a shared machine). Quality: PSNR and mean |difference| (0-255) of the decoded output
against a full-resolution decode + Lanczos reference, before any JPEG encoding.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet_dali.tools.images import center_square_resize
from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess
from alexnet_dali.tools.records import shard_records
from alexnet_dali.tools.shards import iter_shard

SIZES = ((500, 375), (2000, 1500))
WNID = "n01440764"
PATHS = (("pillow, folders", "pillow", "pillow", "folders", False),
         ("turbo + pillow resize, folders", "turbo", "pillow", "folders", False),
         ("turbo + vips, folders", "turbo", "vips", "folders", False),
         ("turbo + vips, official tar", "turbo", "vips", "official", False),
         ("turbo + vips, folders, + PCA sums", "turbo", "vips", "folders", True))
WITHOUT_PCA, WITH_PCA = PATHS[2][0], PATHS[4][0]


@dataclass(frozen=True)
class BenchRow:
    """One source size and path: seconds (wall, CPU) of the best run, quality vs reference."""

    size: tuple[int, int]
    images: int
    path: str
    seconds: float
    cpu_seconds: float
    psnr: float
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


def write_sources(folder: Path, size: tuple[int, int], count: int, seed: int) -> list[bytes]:
    """`count` JPEGs (quality 90) as folder/folders/train/<wnid>/ files and as an official-style
    folder/official/ILSVRC2012_img_train.tar; returns their bytes in name order."""
    target = folder / "folders" / "train" / WNID
    target.mkdir(parents=True)
    (folder / "official").mkdir()
    files = []
    for i in range(count):
        rng = np.random.default_rng([seed, size[0], i])
        w, h = size if i % 2 == 0 else size[::-1]  # landscape and portrait
        buf = io.BytesIO()
        photo_like(rng, w, h).save(buf, format="JPEG", quality=90)
        files.append((f"{WNID}_{i:05d}.JPEG", buf.getvalue()))
        (target / files[-1][0]).write_bytes(files[-1][1])
    inner = io.BytesIO()
    add_members(inner, files)
    with open(folder / "official" / "ILSVRC2012_img_train.tar", "wb") as f:
        add_members(f, [(f"{WNID}.tar", inner.getvalue())])
    return [data for _, data in files]


def add_members(fileobj, members: list[tuple[str, bytes]]) -> None:
    """Write an uncompressed tar of `members` to an open binary file."""
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def reference(data: bytes, size: int) -> np.ndarray:
    """Full-resolution decode + Lanczos central square, float64 HWC, before any encoding."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(center_square_resize(img, size), np.float64)


def timed_run(src: Path, out: Path, config: PreprocessConfig) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one preprocess run into a fresh folder."""
    wall, cpu = time.perf_counter(), time.process_time()
    preprocess(src, out, config, progress=False, notify=lambda _: None)
    return time.perf_counter() - wall, time.process_time() - cpu


def quality(out: Path, refs: dict[str, np.ndarray]) -> tuple[float, float]:
    """PSNR (dB) and mean |difference| of a run's outputs against the references."""
    errors = []
    for record in shard_records(out, "train"):
        names = dict(record["sources"])
        for key, members in iter_shard(out / record["tar"]):
            pixels = np.asarray(Image.open(io.BytesIO(members["jpg"])).convert("RGB"), np.float64)
            errors.append(pixels - refs[names[key]])
    diff = np.stack(errors)
    return float(10 * np.log10(255**2 / np.mean(diff**2))), float(np.abs(diff).mean())


def bench_size(work: Path, size: tuple[int, int], count: int, config: PreprocessConfig,
               repeats: int) -> list[BenchRow]:
    """Every path on one source size, alternating, best of `repeats`."""
    src = work / f"src_{size[0]}x{size[1]}"
    sources = write_sources(src, size, count, seed=0)
    refs = {f"{WNID}/{WNID}_{i:05d}.JPEG": reference(d, config.image.size)
            for i, d in enumerate(sources)}
    configs = {name: replace(config, pca=pca, image=replace(config.image, decoder=decoder,
                                                            resizer=resizer))
               for name, decoder, resizer, _, pca in PATHS}
    runs = {name: [] for name, *_ in PATHS}
    for r in range(repeats + 1):  # run 0 warms the page cache and the imports
        for k, (name, _, _, layout, _) in enumerate(PATHS):
            runs[name].append(timed_run(src / layout, work / f"out_{size[0]}_{k}_{r}",
                                        configs[name]))
    rows = []
    for k, (name, *_) in enumerate(PATHS):
        best = min(runs[name][1:])
        psnr, mad = quality(work / f"out_{size[0]}_{k}_1", refs)
        rows.append(BenchRow(size, count, name, best[0], min(c for _, c in runs[name][1:]),
                             psnr, mad))
    return rows


def run_bench(counts: tuple[int, int], workers: int, repeats: int,
              config: PreprocessConfig = PreprocessConfig()) -> list[BenchRow]:
    """Rows for every source size in `SIZES` (with `counts[i]` images) and every path."""
    config = replace(config, workers=workers, image=replace(config.image, draft=True))
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        return [row for size, count in zip(SIZES, counts)
                for row in bench_size(Path(tmp), size, count, config, repeats)]


def format_table(rows: list[BenchRow], workers: int) -> str:
    """Markdown table of the rows; `x vs pillow` compares with the first path (`pillow,
    folders`) of the same source size."""
    lines = [f"preprocess, {workers} worker(s), best of runs; img/s = source images per second "
             "(wall clock), CPU img/s = per CPU second of this process",
             "| source size | images | path | img/s | CPU img/s | x vs pillow, folders (wall, CPU) "
             "| PSNR dB | mean abs diff |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:  # with more workers, this process's CPU time misses theirs
        base = next(r for r in rows if r.size == row.size)
        cpu = f"{row.images / row.cpu_seconds:.1f}" if workers == 1 else "n/a"
        cpu_ratio = f", {base.cpu_seconds / row.cpu_seconds:.2f}x" if workers == 1 else ""
        lines.append(
            f"| {row.size[0]}x{row.size[1]} | {row.images} | {row.path} "
            f"| {row.images / row.seconds:.1f} | {cpu} "
            f"| {base.seconds / row.seconds:.2f}x{cpu_ratio} "
            f"| {row.psnr:.2f} | {row.mean_abs_diff:.3f} |")
    lines.append("all sizes together (img/s = all images / summed seconds): " + "; ".join(
        f"{name} {mix_rate(rows, name, 'seconds'):.1f}"
        + (f" (CPU {mix_rate(rows, name, 'cpu_seconds'):.1f})" if workers == 1 else "")
        for name, *_ in PATHS))
    with_pca, without = (mix_rate(rows, n, "seconds") for n in (WITH_PCA, WITHOUT_PCA))
    cpu_ratio = (mix_rate(rows, WITH_PCA, "cpu_seconds")
                 / mix_rate(rows, WITHOUT_PCA, "cpu_seconds"))
    cpu = f", per CPU second {cpu_ratio:.2f}x" if workers == 1 else ""
    lines.append(f"preprocess with the PCA sums / without (all sizes): {with_pca:.1f} / "
                 f"{without:.1f} img/s = {with_pca / without:.2f}x wall{cpu}")
    return "\n".join(lines)


def mix_rate(rows: list[BenchRow], path: str, field: str) -> float:
    """Images per second over every size of one path (the benchmark's size mix)."""
    mine = [r for r in rows if r.path == path]
    return sum(r.images for r in mine) / sum(getattr(r, field) for r in mine)

