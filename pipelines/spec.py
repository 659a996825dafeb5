"""Plain-data inputs of the DALI graphs: which shards, which recipe, where the graph runs; and
the names of the draws a train graph returns in test mode.

Nothing here imports DALI: the manifest (read by `tools.manifest`) and pca.json (read by
`tools.pca`, turned into a `recipe.Recipe`) become the frozen dataclasses that the
`@pipeline_def`s in `train.py` / `eval.py` read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from alexnet_dali.config.schema import AugmentConfig
from alexnet_dali.errors import DataError
from alexnet_dali.pipelines.recipe import Recipe
from alexnet_dali.tools.manifest import Manifest, read_manifest
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
    recipe: Recipe  # the augmentation's numbers (mean, divisor, PCA matrix, mean image)
    augment: AugmentConfig = AugmentConfig()
    shard_id: int = 0
    num_shards: int = 1
    device: Literal["cpu", "gpu"] = "cpu"
    hw_decoder_load: float = 0.65
    dtype: Literal["float32", "float16"] = "float32"  # what DALI emits (bfloat16: torch casts)
    layout: Literal["CHW", "HWC"] = "CHW"  # per sample
    shuffle_buffer: int = 4096
    return_draws: bool = False  # test mode: also return the `Draws`


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


@dataclass(frozen=True)
class Draws:
    """What a train graph returns in test mode after (images, `.cls` digits), by name: each
    sample's random draws and the decoded image they were applied to, so that a NumPy reference
    can replay the augmentation. DataNodes in the graph; torch tensors from the loader
    (`Draws.of(outputs[2:])`); NumPy arrays after `map`. A new augmentation adds its draw here."""

    crop_x: Any  # float32 k/span: the crop's anchor k along x
    crop_y: Any  # the same along y
    mirror: Any  # int32 0/1
    alpha: Any  # float32 ×3: α of the PCA colour noise (zeros without it)
    decoded: Any  # HWC uint8, before any augmentation

    def outputs(self) -> tuple[Any, ...]:
        """The draws in output order."""
        return tuple(getattr(self, f.name) for f in fields(self))

    @classmethod
    def of(cls, outputs: Sequence[Any]) -> Draws:
        """The draws from a train graph's outputs after (images, digits)."""
        return cls(*outputs)

    def map(self, convert: Callable[[Any], Any]) -> Draws:
        """Each draw converted (e.g. to NumPy)."""
        return Draws(*(convert(value) for value in self.outputs()))
