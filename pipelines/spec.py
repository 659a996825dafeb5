"""Plain-data inputs of the DALI graphs: which shards, which colour statistics, which recipe.

Nothing here imports DALI: the manifest (read by `tools.manifest`) and pca.json (read by
`tools.pca`) become the frozen dataclasses that the `@pipeline_def`s in `train.py` / `eval.py`
read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from alexnet_dali.config.schema import AugmentConfig
from alexnet_dali.errors import DataError
from alexnet_dali.tools.manifest import Manifest, read_manifest
from alexnet_dali.tools.pca import ColourStats
from alexnet_dali.tools.storage import Store
from alexnet_dali.tools.verify import first_file_problem, listing


@dataclass(frozen=True)
class ShardSet:
    """The tar shards of one split, their DALI index files and the sample count."""

    split: str
    tars: tuple[str, ...]
    indexes: tuple[str, ...] | None  # None: DALI infers the index (slow on big shards)
    samples: int
    image_size: int = 256


@dataclass(frozen=True)
class PipelineSpec:
    """Everything one rank's pipeline needs; `device` is where decode and augmentation run."""

    shards: ShardSet
    stats: ColourStats | None  # None: the recipe needs no pca.json (`needs_colour_stats`)
    augment: AugmentConfig = AugmentConfig()
    shard_id: int = 0
    num_shards: int = 1
    device: Literal["cpu", "gpu"] = "cpu"
    hw_decoder_load: float = 0.65
    dtype: Literal["float32", "float16"] = "float32"  # what DALI emits (bfloat16: torch casts)
    layout: Literal["CHW", "HWC"] = "CHW"  # per sample
    shuffle_buffer: int = 4096
    return_draws: bool = False  # test mode: also return the random draws and the decoded image


def load_shard_set(data: str | Path | Store | Manifest, split: str,
                   files: dict[str, int] | None = None) -> ShardSet:
    """The shards of `split` that DATA/manifest.json lists (the manifest, or where it is), as
    paths (or `s3://` URLs); `files`: the split's `listing`, if already made."""
    manifest = data if isinstance(data, Manifest) else read_manifest(data)
    entry = manifest.split(split)
    if not entry.shards:
        raise DataError(f"{manifest.path}: split {split!r} has no shards; re-run preprocess")
    tars = tuple(manifest.url(s.tar) for s in entry.shards)
    if files is None:  # one listing: the tars' sizes and which indexes are there
        files = listing(manifest, split)
    problem = first_file_problem(manifest, split, files)  # every shard there, its recorded size
    if problem is not None:
        raise DataError(problem)
    indexes = tuple(manifest.url(s.index) for s in entry.shards if s.index)
    have_all = len(indexes) == len(tars) and all(s.index in files for s in entry.shards)
    size = int(manifest.settings.get("size", 256))
    return ShardSet(split, tars, indexes if have_all else None, entry.samples, size)


def needs_colour_stats(augment: AugmentConfig, training: bool) -> bool:
    """Whether pca.json must be read: for PCA noise, the mean image, or a mean/std not given
    explicitly (augment.mean_rgb / std_rgb)."""
    return ((training and augment.pca_noise) or augment.mean == "image"
            or (augment.mean == "channel" and not augment.mean_rgb)
            or (augment.std_normalize and not augment.std_rgb))


def channel_mean_and_std(
    augment: AugmentConfig, stats: ColourStats | None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean to subtract (0 with the mean image or mean="none") and divisor (1 without
    std_normalize); explicit `mean_rgb` / `std_rgb` win over pca.json's (`stats` may be None)."""
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if augment.mean == "channel":
        mean = tuple(float(v) for v in augment.mean_rgb) if augment.mean_rgb else stats.mean
    if augment.std_normalize:
        std = tuple(float(v) for v in augment.std_rgb) if augment.std_rgb else stats.std
    return mean, std


def pca_matrix(stats: ColourStats, scale: str = "sqrt") -> np.ndarray:
    """3x3 float32 M with shift = M·α: P·diag(√λ) ("sqrt") or P·diag(λ) ("eigenvalue")."""
    p = np.asarray(stats.eigenvectors, dtype=np.float64)
    lam = np.asarray(stats.eigenvalues, dtype=np.float64)
    if scale == "sqrt":
        lam = np.sqrt(np.maximum(lam, 0.0))
    elif scale != "eigenvalue":
        raise ValueError(f"augment.pca_scale must be 'eigenvalue' or 'sqrt', not {scale!r}")
    return (p * lam[None, :]).astype(np.float32)
