"""Plain-data inputs of the DALI graphs: which shards, which colour statistics, which recipe.

Nothing here imports DALI: `manifest.json` and `pca.json` (docs/DESIGN.md) become frozen
dataclasses that the `@pipeline_def`s in `train.py` / `eval.py` read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from alexnet_dali.config import AugmentConfig
from alexnet_dali.errors import DataError
from alexnet_dali.tools.manifest import read_manifest
from alexnet_dali.tools.verify import first_file_problem


@dataclass(frozen=True)
class ShardSet:
    """The tar shards of one split, their DALI index files and the sample count."""

    split: str
    tars: tuple[str, ...]
    indexes: tuple[str, ...] | None  # None: DALI infers the index (slow on big shards)
    samples: int
    image_size: int = 256


@dataclass(frozen=True)
class ColourStats:
    """Training-set colour statistics on the 0-255 scale, from pca.json."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    eigenvalues: tuple[float, float, float]
    eigenvectors: tuple[tuple[float, ...], ...]  # 3x3, eigenvectors are the COLUMNS
    mean_image: np.ndarray | None = field(default=None, compare=False, repr=False)  # HWC f32


@dataclass(frozen=True)
class PipelineSpec:
    """Everything one rank's pipeline needs; `device` is where decode and augmentation run."""

    shards: ShardSet
    stats: ColourStats
    augment: AugmentConfig = AugmentConfig()
    shard_id: int = 0
    num_shards: int = 1
    device: Literal["cpu", "gpu"] = "cpu"
    hw_decoder_load: float = 0.65
    dtype: Literal["float32", "float16"] = "float32"  # what DALI emits (bfloat16: torch casts)
    layout: Literal["CHW", "HWC"] = "CHW"  # per sample
    shuffle_buffer: int = 4096
    return_draws: bool = False  # test mode: also return the random draws and the decoded image


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; {what}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); {what}") from None


def load_shard_set(data_dir: str | Path, split: str) -> ShardSet:
    """The shards of `split` listed in data_dir/manifest.json, with paths made absolute."""
    manifest = read_manifest(data_dir)
    entry = manifest.split(split)
    if not entry.shards:
        raise DataError(f"{manifest.path}: split {split!r} has no shards; re-run preprocess")
    tars = tuple(str(manifest.root / s.tar) for s in entry.shards)
    problem = first_file_problem(manifest, split)  # every shard there, with its recorded size
    if problem is not None:
        raise DataError(problem)
    indexes = tuple(str(manifest.root / s.index) for s in entry.shards if s.index)
    have_all = len(indexes) == len(tars) and all(Path(i).is_file() for i in indexes)
    size = int(manifest.settings.get("size", 256))
    return ShardSet(split, tars, indexes if have_all else None, entry.samples, size)


def load_colour_stats(data_dir: str | Path, need_mean_image: bool = False) -> ColourStats:
    """Mean, std and the RGB eigen-decomposition from data_dir/pca.json (0-255 scale)."""
    path = Path(data_dir) / "pca.json"
    pca = _read_json(path, "run `alexnet-dali pca-stats DATA` to compute it")
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
    check_pca_is_current(Path(data_dir), pca)
    if not need_mean_image:
        return stats
    name = pca.get("mean_image")
    if not name:
        raise DataError(
            f"{path}: augment.mean = 'image' needs a mean image, but pca.json has none; "
            "recompute it with `alexnet-dali pca-stats` (mean image on) or use mean = 'channel'"
        )
    image_path = Path(data_dir) / name
    try:
        image = np.load(image_path).astype(np.float32)
    except (OSError, ValueError) as e:
        raise DataError(
            f"{image_path}: cannot read the mean image ({e}); re-run "
            "`alexnet-dali pca-stats DATA` or use augment.mean = 'channel'") from None
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{image_path}: expected an HxWx3 mean image, got shape {image.shape}")
    return ColourStats(stats.mean, stats.std, stats.eigenvalues, stats.eigenvectors, image)


def check_pca_is_current(data_dir: Path, pca: dict) -> None:
    """pca.json must come from the train shards the manifest lists now (not an older build)."""
    recorded = pca.get("train_shards_sha256")
    if recorded is None:  # written by a version that did not record it
        return
    manifest = read_manifest(data_dir)
    if manifest.split_fingerprint("train") != recorded:
        raise DataError(
            f"{data_dir / 'pca.json'}: computed from other train shards than {manifest.path} "
            f"lists now (train was rebuilt); re-run `alexnet-dali pca-stats {data_dir}`")


def pca_matrix(stats: ColourStats, scale: str = "eigenvalue") -> np.ndarray:
    """3x3 float32 M with shift = M·α: P·diag(λ) ("eigenvalue") or P·diag(√λ) ("sqrt")."""
    p = np.asarray(stats.eigenvectors, dtype=np.float64)
    lam = np.asarray(stats.eigenvalues, dtype=np.float64)
    if scale == "sqrt":
        lam = np.sqrt(np.maximum(lam, 0.0))
    elif scale != "eigenvalue":
        raise ValueError(f"augment.pca_scale must be 'eigenvalue' or 'sqrt', not {scale!r}")
    return (p * lam[None, :]).astype(np.float32)
