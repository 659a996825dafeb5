"""Reading one image's bytes out of a parquet shard by row number (pyarrow, the `hf` extra).

A worker reads a whole row group's `image.bytes` column at a time and keeps the last one, so
neighbouring rows cost one read. Shared by the listing (`tools.hf`) and the workers
(`tools.sources.SourceReader`), and importing nothing else of the project, so neither imports
the other.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from alexnet_dali.tools.imagenet import import_optional


def pyarrow_parquet():
    """The `pyarrow.parquet` module, or a DataError saying to install the `hf` extra."""
    return import_optional("pyarrow.parquet", "hf")


@lru_cache(maxsize=1)
def _row_group_images(path: str, group: int) -> list:
    file = pyarrow_parquet().ParquetFile(path)
    return file.read_row_group(group, columns=["image.bytes"]).column("image") \
        .combine_chunks().field("bytes").to_pylist()


@lru_cache(maxsize=64)
def _row_group_starts(path: str) -> np.ndarray:
    meta = pyarrow_parquet().ParquetFile(path).metadata
    return np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])


def read_image(path: str, row: int) -> bytes:
    """The image bytes of row `row` of a parquet shard."""
    starts = _row_group_starts(path)
    group = int(np.searchsorted(starts, row, side="right")) - 1
    data = _row_group_images(path, group)[row - int(starts[group])]
    if data is None:
        raise OSError(f"row {row} of {path} has no image bytes")
    return data
