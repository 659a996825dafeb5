"""Hugging Face `imagenet-1k` parquet shards: list their rows, read one row's image bytes.

Columns: `image` (struct of `bytes` and `path`) and `label` (int: already the index in the sorted
WNID list; -1 marks an unlabelled image, e.g. the test split). Listing reads only the `label` and
`image.path` columns. A worker reads one image by reading its row group's `image.bytes` column;
the last row group read is kept, so neighbouring rows cost one read.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alexnet_dali.errors import DataError
from alexnet_dali.tools.imagenet import Classes
from alexnet_dali.tools.parquet_rows import pyarrow_parquet
from alexnet_dali.tools.scan import SplitScan
from alexnet_dali.tools.sources import PARQUET, SourceListBuilder

SPLIT_PREFIXES = {"train": "train", "val": "validation"}
HF_NAME = re.compile(r"(.+)_(n\d{8})(\.\w+)")  # n01440764_10026_n01440764.JPEG


def parquet_files(src: Path) -> dict[str, list[Path]]:
    """{split prefix: sorted shard files} in SRC/data/ or SRC (train, validation, test, ...)."""
    found: dict[str, list[Path]] = {}
    for folder in (src / "data", src):
        for path in sorted(folder.glob("*.parquet")):
            found.setdefault(path.name.split("-", 1)[0], []).append(path)
        if found:
            break
    return found


def class_label_names(path: Path) -> list[str] | None:
    """The `label` ClassLabel names stored in a shard's Hugging Face schema metadata, if any."""
    import json

    metadata = pyarrow_parquet().read_schema(path).metadata or {}
    try:
        info = json.loads(metadata[b"huggingface"])["info"]["features"]["label"]
        return [str(name) for name in info["names"]]
    except (KeyError, TypeError, ValueError):
        return None


def max_label(files: dict[str, list[Path]]) -> int:
    """The largest label in any shard (the class count when nothing else gives it, minus 1)."""
    pq = pyarrow_parquet()
    return max(int(pq.ParquetFile(path).read(columns=["label"]).column("label").to_numpy()
                   .max(initial=-1)) for paths in files.values() for path in paths)


def canonical_name(path: str, label: int, classes: Classes, fallback: str) -> str:
    """`<class>/<file>`; Hugging Face's `<file>_<wnid>.JPEG` loses the `_<wnid>` it repeats."""
    base = path.rsplit("/", 1)[-1] or fallback
    found = HF_NAME.fullmatch(base)
    if found and found.group(2) == classes.names[label]:
        base = found.group(1) + found.group(3)
    return f"{classes.names[label]}/{base}"


def scan_parquet(files: list[Path], classes: Classes,
                 progress: bool = False) -> tuple[SplitScan, int]:
    """Labelled rows of the shard files, and how many rows were unlabelled (-1) and skipped; a
    bar counts the files read when `progress`."""
    pq = pyarrow_parquet()
    builder, skipped = SourceListBuilder(), 0
    for path in tqdm(files, unit="file", desc=f"list {files[0].parent}", disable=not progress,
                     leave=False, dynamic_ncols=True):
        try:
            table = pq.ParquetFile(path).read(columns=["label", "image.path"])
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{path}: cannot read columns label and image.path ({e}); expected "
                            "Hugging Face imagenet-1k parquet shards") from None
        labels = np.asarray(table.column("label").to_numpy(zero_copy_only=False), np.int64)
        paths = table.column("image").combine_chunks().field("path").to_pylist()
        bad = np.flatnonzero((labels < -1) | (labels >= len(classes.names)))
        if len(bad):
            raise DataError(f"{path}: row {bad[0]} has label {labels[bad[0]]}, outside 0.."
                            f"{len(classes.names) - 1}; check --class-names")
        rows = np.flatnonzero(labels >= 0)
        skipped += len(labels) - len(rows)
        container = builder.add_container(PARQUET, str(path.absolute()))
        names = [canonical_name(paths[r] or "", int(labels[r]), classes,
                                f"{path.stem}-{r:07d}") for r in rows.tolist()]
        builder.extend(container, names, labels[rows].tolist(), rows.tolist())
    sources, duplicates = builder.build()
    return SplitScan(sources, tuple(duplicates)), skipped
