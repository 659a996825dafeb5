"""What DATA names, read once at the start and passed down: a shard folder (`ShardData`: its
manifest, its colour statistics, the shard set of each split) or `synthetic` (`SyntheticData`:
generated batches, no files). Both kinds answer the same questions (the manifest hash, the class
list, the image size, the class count, the file check), so no caller tests which one it has; only
`loader/build.py` picks the loaders by kind.

manifest.json is parsed once per `ShardData`, pca.json (and the mean image) on first use and
once, each split's shard files listed on first use and once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from alexnet_dali.errors import DataError
from alexnet_dali.pipelines.spec import ShardSet, load_shard_set
from alexnet_dali.tools.manifest import Manifest, read_manifest, require_manifest
from alexnet_dali.tools.pca import ColourStats, load_colour_stats
from alexnet_dali.tools.storage import Store
from alexnet_dali.tools.verify import first_file_problem, listing

SYNTHETIC = "synthetic"  # DATA that names no folder: generated batches (loader/synthetic.py)


class ShardData:
    """A shard folder (local, or an `s3://` prefix) with its manifest read."""

    def __init__(self, location: str | Path | Store, manifest: Manifest | None = None) -> None:
        self.location = location  # as given: messages name it so
        self.manifest = manifest or read_manifest(location)
        self._stats: ColourStats | None = None
        self._files: dict[str, dict[str, int]] = {}
        self._shard_sets: dict[str, ShardSet] = {}

    def __str__(self) -> str:
        return str(self.location)

    @property
    def sha256(self) -> str:
        """The manifest hash (DESIGN.md), recorded in checkpoints and pca.json."""
        return self.manifest.sha256

    @property
    def classes(self) -> list[list[str]]:
        """The classes in id order as [name (WNID), words] pairs, carried into checkpoints."""
        return [[c.name, c.words] for c in self.manifest.classes]

    @property
    def class_names(self) -> list[str]:
        """Each class's name (WNID or folder name), in id order."""
        return [c.name for c in self.manifest.classes]

    @property
    def image_size(self) -> int:
        """The side of the square shard images (`preprocess --size`)."""
        return int(self.manifest.settings.get("size", 256))

    def num_classes(self, configured: int) -> int:
        """The class count the model must have: the manifest's (`configured` is overridden)."""
        return len(self.manifest.classes)

    def files(self, split: str) -> dict[str, int]:
        """rel -> bytes of the files beside the split's shards (one listing, kept)."""
        if split not in self._files:
            self._files[split] = listing(self.manifest, split)
        return self._files[split]

    def check_files(self, splits: tuple[str, ...] = ("train", "val")) -> None:
        """The cheap start check: every shard of `splits` there with its recorded size (DataError
        naming the first that is not; `verify` checks the bytes)."""
        for split in splits:
            if split in self.manifest.splits:
                problem = first_file_problem(self.manifest, split, self.files(split))
                if problem is not None:
                    raise DataError(problem)

    def shard_set(self, split: str) -> ShardSet:
        """The shards of `split`, as paths (or `s3://` URLs), for the DALI readers."""
        if split not in self._shard_sets:
            files = self.files(split) if split in self.manifest.splits else None
            self._shard_sets[split] = load_shard_set(self.manifest, split, files)
        return self._shard_sets[split]

    def colour_stats(self, need_mean_image: bool = False) -> ColourStats:
        """pca.json's statistics (with the mean image if asked: mean_image.npy)."""
        if self._stats is None or (need_mean_image and self._stats.mean_image is None):
            self._stats = load_colour_stats(self.manifest.store, need_mean_image,
                                            manifest=self.manifest)
        return self._stats if need_mean_image else replace(self._stats, mean_image=None)


class SyntheticData:
    """DATA `synthetic`: no files, so none of a shard folder's facts (each answer is None, the
    class count the configured one, the file check passes)."""

    location = SYNTHETIC
    manifest = sha256 = classes = class_names = image_size = None

    def __str__(self) -> str:
        return SYNTHETIC

    def num_classes(self, configured: int) -> int:
        """The configured class count (synthetic labels take any)."""
        return configured

    def check_files(self, splits: tuple[str, ...] = ("train", "val")) -> None:
        """Nothing to check."""

    def colour_stats(self, need_mean_image: bool = False) -> None:
        """None: generated batches have no pca.json."""
        return None


Data = ShardData | SyntheticData


def open_data(location: str | Path | Store | Data) -> Data:
    """DATA as the command line names it: `synthetic`, or a shard folder (its manifest read
    now); an opened value is returned as it is."""
    if isinstance(location, (ShardData, SyntheticData)):
        return location
    return SyntheticData() if str(location) == SYNTHETIC else ShardData(location)


def open_shards(location: str | Path | Store | ShardData) -> ShardData:
    """A shard folder: the loaders take one opened, or its location."""
    return location if isinstance(location, ShardData) else ShardData(location)


def require_data(location: str, command: str) -> None:
    """A DataError saying what to run when DATA is neither `synthetic` nor a shard folder (a
    look for manifest.json, before anything is read)."""
    if location != SYNTHETIC:
        require_manifest(location, command)


def class_list(location: str | Path | Data) -> list[list[str]] | None:
    """DATA's classes in id order as [name (WNID), words] pairs; None for synthetic data."""
    return open_data(location).classes
