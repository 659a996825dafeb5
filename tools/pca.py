"""Pixel statistics of the train shards -> `OUT/pca.json` (and optionally the mean image), its
one writer (`write_pca`, also fed by `preprocess --pca`) and the one reader of both
(`load_colour_stats`).

Each worker streams its shards (from a folder or an `s3://` prefix) and accumulates exact
integers (`tools.pixelstats`): pixel count, per-channel sum of uint8 values and the 3x3 sum of
products (int64 is exact up to ~1.4e14 pixels), plus the per-position sum for the mean image.
Integer partial sums merge exactly, so any worker count gives the same result. Statistics are
computed from the exact sums once, in float64:
covariance = (N * sum(x x^T) - sum(x) sum(x)^T) / N^2 (population covariance).
"""

from __future__ import annotations

import io
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alexnet_dali.errors import DataError, ctrl_c_blocked_for_new_workers
from alexnet_dali.tools import manifest as mf
from alexnet_dali.tools import outdir
from alexnet_dali.tools.pixelstats import Accumulator, PixelSums, decode_rgb, record_sums
from alexnet_dali.tools.records import read_json, read_plans, sidecar_path
from alexnet_dali.tools.shards import iter_shard
from alexnet_dali.tools.storage import LocalStore, Store, open_store

PCA_NAME = "pca.json"
MEAN_IMAGE_NAME = "mean_image.npy"


@dataclass(frozen=True)
class ColourStats:
    """Training-set colour statistics on the 0-255 scale, from pca.json."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    eigenvalues: tuple[float, float, float]
    eigenvectors: tuple[tuple[float, ...], ...]  # 3x3, eigenvectors are the COLUMNS
    mean_image: np.ndarray | None = field(default=None, compare=False, repr=False)  # HWC f32


Task = tuple[Store, str, int, bool]  # (store, tar, samples to use, mean image?)


def shard_sums(task: Task) -> PixelSums:
    """Worker: sums over the first `limit` samples of one shard, streamed from its store."""
    store, tar, limit, mean_image = task
    sums = Accumulator(mean_image)
    with store.open(tar) as stream:
        for n, (key, members) in enumerate(iter_shard(stream)):
            if n >= limit:
                break
            if "jpg" not in members:
                raise DataError(f"{store.url(tar)}: sample {key} has no .jpg member; re-run "
                                "preprocess")
            sums.add(decode_rgb(members["jpg"]))
    return sums.sums()


def shard_tasks(manifest: mf.Manifest, max_images: int | None, mean_image: bool) -> list[Task]:
    """(store, tar, samples to use, mean image?) per train shard; `max_images` takes a prefix."""
    tasks, left = [], max_images if max_images is not None else float("inf")
    for shard in manifest.split("train").shards:
        take = int(min(shard.samples, left))
        if take <= 0:
            break
        tasks.append((manifest.store, shard.tar, take, mean_image))
        left -= take
    return tasks


def accumulate(tasks: list[Task], workers: int,
               progress: bool = True) -> PixelSums:
    """Sums over all tasks (one shard each), folded as they arrive; progress bar in images."""
    bar = tqdm(total=sum(t[2] for t in tasks), unit="img", desc="pca-stats",
               disable=not progress, dynamic_ncols=True)
    total = None
    with ctrl_c_blocked_for_new_workers():
        pool = get_context("spawn").Pool(workers) if workers > 1 else None
    with bar, pool or nullcontext():
        parts = pool.imap(shard_sums, tasks) if pool else map(shard_sums, tasks)
        for task, part in zip(tasks, parts):
            bar.update(task[2])
            if part.images:  # empty sums carry no mean-image array: skip, not merge
                total = part if total is None else total.merge(part)
    if total is None:
        raise DataError("no train images to compute statistics from")
    return total


def pin_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-magnitude component is positive."""
    idx = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    return vectors * np.where(signs == 0, 1.0, signs)


def statistics(sums: PixelSums) -> dict:
    """mean, std, covariance, eigenvalues (descending), eigenvectors (columns), float64."""
    n = sums.pixels
    s = [int(v) for v in sums.sum]
    # exact integer numerator, one float division: no cancellation error
    cov = np.array([[(n * int(sums.outer[i, j]) - s[i] * s[j]) / (n * n) for j in range(3)]
                    for i in range(3)], dtype=np.float64)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    return {"mean": [v / n for v in s], "std": np.sqrt(np.diag(cov)).tolist(),
            "covariance": cov.tolist(), "eigenvalues": values[order].tolist(),
            "eigenvectors": pin_signs(vectors[:, order]).tolist()}


def pca_stats(out: str | Path | Store, workers: int = 1, max_images: int | None = None,
              mean_image: bool = False, progress: bool = True) -> dict:
    """Stream the train shards of OUT (a folder or an `s3://` prefix) and write `OUT/pca.json`
    (+ mean image) there; returns it."""
    manifest = mf.read_manifest(out)
    sums = accumulate(shard_tasks(manifest, max_images, mean_image), workers, progress)
    return write_pca(manifest, sums, max_images)


def pca_from_records(out: Path) -> str:
    """pca.json + mean_image.npy in OUT from the pixel sums `preprocess --pca` recorded for
    each train shard (exactly what `pca-stats OUT` computes from the same shards); one line
    saying what was written, or why nothing was (shards built without the sums; "" when
    OUT has a pca.json already)."""
    manifest = mf.read_manifest(out)
    total, missing = None, 0
    for i in range(read_plans(out)["train"]["shards"]):  # every record, empty shards' too
        path = sidecar_path(out, "train", i)
        part = record_sums(read_json(path), path)
        if part is None:
            missing += 1
        elif part.images:
            total = part if total is None else total.merge(part)
    if missing or total is None:
        if (out / PCA_NAME).exists():
            return ""
        return (f"note: {out / PCA_NAME} not written: {missing} train shards were built "
                f"without --pca; run `alexnet-dali pca-stats {out}`")
    write_pca(manifest, total)
    return (f"wrote {out / PCA_NAME} and {MEAN_IMAGE_NAME} ({total.images} images, from the "
            "pixels just written: no second pass)")


def write_pca(manifest: mf.Manifest, sums: PixelSums, max_images: int | None = None) -> dict:
    """`pca.json` (and `mean_image.npy` when `sums` has the per-position sum) from exact sums,
    beside the manifest; returns pca.json's content."""
    store = manifest.store
    result = statistics(sums)
    result.update(images=sums.images, pixels=sums.pixels, manifest_sha256=manifest.sha256,
                  train_shards_sha256=manifest.split_fingerprint("train"),
                  max_images=max_images, mean_image=None)
    with outdir.explain_os_errors("re-run pca-stats", manifest.root):
        if isinstance(store, LocalStore):
            outdir.remove_dead_temps(store.root)
        if sums.image_sum is not None:
            mean = (sums.image_sum / sums.images).astype(np.float32)  # HWC, 0-255 scale
            buffer = io.BytesIO()
            np.save(buffer, mean)
            store.write_bytes(MEAN_IMAGE_NAME, buffer.getvalue())
            result["mean_image"] = MEAN_IMAGE_NAME
        store.write_bytes(PCA_NAME, (json.dumps(result, indent=1) + "\n").encode("utf-8"))
    return result


def summary(result: dict) -> str:
    """A few readable lines about pca.json."""
    fmt = lambda values: "[" + ", ".join(f"{v:8.3f}" for v in values) + "]"  # noqa: E731
    lines = [f"images {result['images']}, pixels {result['pixels']}",
             f"mean (RGB, 0-255)   {fmt(result['mean'])}",
             f"std                 {fmt(result['std'])}",
             f"eigenvalues         {fmt(result['eigenvalues'])}",
             "eigenvectors (columns):"]
    lines += [f"                    {fmt(row)}" for row in result["eigenvectors"]]
    if result.get("mean_image"):
        lines.append(f"mean image          {result['mean_image']} (float32 HWC)")
    return "\n".join(lines)


def _read_json(store: Store, rel: str, what: str) -> dict:
    try:
        return json.loads(store.read_bytes(rel))
    except FileNotFoundError:
        raise DataError(f"{store.url(rel)}: not found; {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{store.url(rel)}: not valid JSON ({e}); {what}") from None


def load_colour_stats(data_dir: str | Path | Store, need_mean_image: bool = False, *,
                      manifest: mf.Manifest | None = None) -> ColourStats:
    """Mean, std and the RGB eigen-decomposition from data_dir/pca.json (0-255 scale); data_dir
    is a folder or an `s3://` prefix. `manifest`: data_dir's, if already read (pca.json is
    checked against it)."""
    store = open_store(data_dir)
    path = store.url(PCA_NAME)
    pca = _read_json(store, PCA_NAME, "run `alexnet-dali pca-stats DATA` to compute it")
    try:
        vectors = np.asarray(pca["eigenvectors"], dtype=np.float64)
        stats = ColourStats(
            mean=tuple(float(v) for v in pca["mean"]),
            std=tuple(float(v) for v in pca["std"]),
            eigenvalues=tuple(float(v) for v in pca["eigenvalues"]),
            eigenvectors=tuple(tuple(float(v) for v in row) for row in vectors),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: malformed ({e!r}); re-run `alexnet-dali pca-stats`") from None
    if vectors.shape != (3, 3) or len(stats.mean) != 3 or len(stats.eigenvalues) != 3:
        raise DataError(f"{path}: expected 3 means/eigenvalues and a 3x3 eigenvector matrix")
    _check_pca_is_current(store, pca, manifest)
    if not need_mean_image:
        return stats
    name = pca.get("mean_image")
    if not name:
        raise DataError(
            f"{path}: augment.mean = 'image' needs a mean image, but pca.json has none; "
            "recompute it with `alexnet-dali pca-stats` (mean image on) or use mean = 'channel'"
        )
    image_path = store.url(name)
    try:
        image = np.load(io.BytesIO(store.read_bytes(name))).astype(np.float32)
    except (OSError, ValueError) as e:
        raise DataError(
            f"{image_path}: cannot read the mean image ({e}); re-run "
            "`alexnet-dali pca-stats DATA` or use augment.mean = 'channel'") from None
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{image_path}: expected an HxWx3 mean image, got shape {image.shape}")
    return ColourStats(stats.mean, stats.std, stats.eigenvalues, stats.eigenvectors, image)


def _check_pca_is_current(store: Store, pca: dict, manifest: mf.Manifest | None) -> None:
    """pca.json must come from the train shards the manifest lists now (not an older build)."""
    recorded = pca.get("train_shards_sha256")
    if recorded is None:  # written by a version that did not record it
        return
    manifest = manifest or mf.read_manifest(store)
    if manifest.split_fingerprint("train") != recorded:
        raise DataError(
            f"{store.url(PCA_NAME)}: computed from other train shards than {manifest.path} "
            f"lists now (train was rebuilt); re-run `alexnet-dali pca-stats {store}`")
