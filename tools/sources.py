"""Where each source image's bytes are: one compact listing that every input layout produces.

A `SourceList` is a struct of arrays with one entry per image: its canonical name, its class id
and a locator (container, offset, size). The canonical name is `<class>/<file>` (for a nested
ImageFolder, the path under the split folder) whichever layout the image came from: the official
tars, Kaggle's folders and an extracted tree give the same names, so sorting and shuffling them
gives the same shards. Container kinds:

- `dir`: a folder; the image is the file `<folder>/<last part of the name>`;
- `tar`: a tar file; the image is `size` bytes at byte `offset` (members of a tar inside the tar
  have absolute offsets too, so nothing is ever extracted);
- `parquet`: a parquet file; the image is row `offset` of the file.

Workers open the containers themselves and seek (`SourceReader`), so reading runs in parallel.
Names are NumPy variable-width strings and the locator three integer columns, not a Python object
per file (memory measured in docs/DATA.md).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.dtypes import StringDType

from alexnet_dali.tools import parquet_rows
from alexnet_dali.tools.images import RejectedImage

DIR, TAR, PARQUET = "dir", "tar", "parquet"
KINDS = (DIR, TAR, PARQUET)


@dataclass(frozen=True)
class Reject:
    """A found file that is not written, with a reason slug and detail."""

    rel: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Container:
    """A folder, tar file or parquet file that holds source images."""

    kind: str
    path: str


@dataclass(frozen=True)
class Locator:
    """Where one image's bytes are: container kind and path, offset, size (-1: unknown)."""

    kind: str
    path: str
    offset: int
    size: int


@dataclass(frozen=True)
class SourceList:
    """Struct of arrays, one entry per image: names (str), labels (int32), container (int32
    index into `containers`), offset and size (int64)."""

    names: np.ndarray
    labels: np.ndarray
    container: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    containers: tuple[Container, ...]

    def __len__(self) -> int:
        return len(self.names)

    def take(self, order: np.ndarray) -> SourceList:
        """The entries at `order`, in that order."""
        return SourceList(self.names[order], self.labels[order], self.container[order],
                          self.offset[order], self.size[order], self.containers)

    def locator(self, i: int) -> Locator:
        """Where entry `i`'s bytes are."""
        box = self.containers[int(self.container[i])]
        path = box.path
        if box.kind == DIR:
            path = os.path.join(path, str(self.names[i]).rsplit("/", 1)[-1])
        return Locator(box.kind, path, int(self.offset[i]), int(self.size[i]))

    def sha256(self) -> str:
        """sha256 of the `name<TAB>label` lines: the same for the same images in any layout."""
        digest = hashlib.sha256()
        for start in range(0, len(self), 65536):
            lines = (f"{n}\t{c}\n" for n, c in zip(self.names[start:start + 65536].tolist(),
                                                  self.labels[start:start + 65536].tolist()))
            digest.update("".join(lines).encode("utf-8"))
        return digest.hexdigest()


class SourceListBuilder:
    """Collects entries container by container (NumPy chunks, no per-file objects)."""

    def __init__(self) -> None:
        self._containers: list[Container] = []
        self._chunks: list[tuple[np.ndarray, ...]] = []

    def add_container(self, kind: str, path: str) -> int:
        """Register a container; returns its index."""
        if kind not in KINDS:
            raise ValueError(f"container kind {kind!r} is not one of {KINDS}")
        self._containers.append(Container(kind, path))
        return len(self._containers) - 1

    def extend(self, container: int | Iterable[int], names: Sequence[str],
               labels: int | Iterable[int], offsets: Iterable[int] | None = None,
               sizes: Iterable[int] | None = None) -> None:
        """Add entries (an int container or label applies to all; offsets/sizes default 0/-1)."""
        count = len(names)
        if count == 0:
            return

        def column(values: int | Iterable[int]) -> np.ndarray:
            return np.full(count, values, np.int32) if isinstance(values, int) else \
                np.fromiter(values, np.int32, count)

        self._chunks.append((
            np.array(names, dtype=StringDType()), column(labels), column(container),
            np.zeros(count, np.int64) if offsets is None else np.fromiter(offsets, np.int64, count),
            np.full(count, -1, np.int64) if sizes is None else np.fromiter(sizes, np.int64, count),
        ))

    def build(self) -> tuple[SourceList, list[Reject]]:
        """Entries sorted by name; a repeated name keeps the first and rejects the others."""
        if len(self._chunks) == 1:  # one folder walk: no copy
            columns = list(self._chunks[0])
        elif self._chunks:
            columns = [np.concatenate(parts) for parts in zip(*self._chunks)]
        else:
            columns = [np.array([], dtype=StringDType())] + [
                np.array([], dtype) for dtype in (np.int32, np.int32, np.int64, np.int64)]
        self._chunks = []
        listing = SourceList(*columns, tuple(self._containers))
        if len(listing) > 1 and not np.all(listing.names[1:] >= listing.names[:-1]):
            listing = listing.take(np.argsort(listing.names, kind="stable"))  # a tar's order
        repeated = np.flatnonzero(listing.names[1:] == listing.names[:-1]) + 1
        rejects = [Reject(str(listing.names[i]), "duplicate",
                          f"a second image with this name in {listing.locator(i).path}")
                   for i in repeated.tolist()]
        if len(repeated):
            listing = listing.take(np.setdiff1d(np.arange(len(listing)), repeated))
        return listing, rejects


def valid_name(name: str) -> bool:
    """False for names with undecodable bytes (they cannot be stored or written to JSON)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class SourceReader:
    """Reads image bytes at locators, keeping a few containers open (one reader per worker)."""

    def __init__(self, open_files: int = 8) -> None:
        self._open_files = open_files
        self._fds: OrderedDict[str, int] = OrderedDict()

    def read(self, loc: Locator) -> bytes:
        """The bytes at `loc`; I/O errors become RejectedImage('unreadable' or 'truncated')."""
        try:
            if loc.kind == DIR:
                with open(loc.path, "rb") as f:
                    return f.read()
            if loc.kind == TAR:
                data = os.pread(self._fd(loc.path), loc.size, loc.offset)
                if len(data) != loc.size:
                    raise RejectedImage("truncated", f"{loc.path} ends inside this member")
                return data
            return parquet_rows.read_image(loc.path, loc.offset)
        except (OSError, ValueError) as e:  # pyarrow's errors derive from these
            raise RejectedImage("unreadable", f"{type(e).__name__}: {e.strerror or e}"
                                if isinstance(e, OSError) else f"{type(e).__name__}: {e}") from None

    def _fd(self, path: str) -> int:
        if path in self._fds:
            self._fds.move_to_end(path)
            return self._fds[path]
        if len(self._fds) >= self._open_files:
            os.close(self._fds.popitem(last=False)[1])
        self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def close(self) -> None:
        """Close every open container."""
        while self._fds:
            os.close(self._fds.popitem()[1])
