"""Exact, mergeable pixel statistics of decoded JPEGs: what pca.json is computed from.

Two producers, one arithmetic: `pca-stats` decodes the train shards again, `preprocess --pca`
decodes each JPEG it has just encoded (the bytes that go into the shard), so both see the same
pixels and sum the same integers: images, pixels, sum x (3,), sum x x^T (3, 3) and the
per-position sum for the mean image. Integer sums add exactly, so any split into workers,
shards or `--part` hosts, merged in any order, gives the same result.

Speed (`Accumulator.add`, profiled against the decode, which it must not outweigh): one pass
copies an image into uint32 channel planes; each of the six distinct products is one uint32
multiply and one uint32 sum over at most `CHUNK` pixels, exact because 65536 * 255**2 <
2**32, then added as Python integers. (Tried and slower on the 2-core dev machine: float64
matrix products (a 3 x N by N x 3 BLAS product is a poor shape), float32 products on exact
256-pixel blocks (einsum), uint16 products summed into uint64 (the cast), reductions over
interleaved RGB.) The per-position sum is added in place into uint32 (`FLUSH` images at most
before it moves into int64).
`PixelSums.add_image` is the plain float64 version, kept as the reference the fast one is
tested against.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from alexnet_dali.tools.storage import LocalStore

CHUNK = 1 << 16  # pixels per uint32 sum of products: 65536 * 255**2 < 2**32, exact
FLUSH = 1 << 16  # images per uint32 per-position sum: 65536 * 255 < 2**32
PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # the distinct entries of x x^T


@dataclass(frozen=True)
class PixelSums:
    """Exact, mergeable sums: images, pixels, sum x (3,), sum x x^T (3, 3), per-position sum."""

    images: int
    pixels: int
    sum: np.ndarray  # int64 (3,)
    outer: np.ndarray  # int64 (3, 3)
    image_sum: np.ndarray | None  # int64 (H, W, 3) or None

    @staticmethod
    def zero(shape: tuple[int, int] | None) -> "PixelSums":
        """Empty sums; `shape` (H, W) enables the per-position sum for the mean image."""
        image_sum = None if shape is None else np.zeros((*shape, 3), np.int64)
        return PixelSums(0, 0, np.zeros(3, np.int64), np.zeros((3, 3), np.int64), image_sum)

    def add_image(self, rgb: np.ndarray) -> "PixelSums":
        """Add one HWC uint8 RGB image (the plain reference of `Accumulator.add`)."""
        x = rgb.reshape(-1, 3).astype(np.float64)
        # float64 products of uint8 values sum exactly while below 2**53 (one image: ~4e9)
        outer = np.rint(x.T @ x).astype(np.int64)
        image_sum = None if self.image_sum is None else self.image_sum + rgb
        return PixelSums(self.images + 1, self.pixels + len(x),
                         self.sum + rgb.reshape(-1, 3).sum(0, dtype=np.int64),
                         self.outer + outer, image_sum)

    def merge(self, other: "PixelSums") -> "PixelSums":
        """Exact sum of two partial results."""
        if (self.image_sum is None) != (other.image_sum is None):
            raise ValueError("cannot merge sums with and without the mean image")
        image_sum = None if self.image_sum is None else self.image_sum + other.image_sum
        return PixelSums(self.images + other.images, self.pixels + other.pixels,
                         self.sum + other.sum, self.outer + other.outer, image_sum)

    def record(self) -> dict:
        """The small sums as JSON (a shard record's `pixel_sums`; the image sum goes beside)."""
        return {"images": self.images, "pixels": self.pixels,
                "sum": [int(v) for v in self.sum],
                "outer": [[int(v) for v in row] for row in self.outer]}

    @staticmethod
    def from_record(record: dict, image_sum: np.ndarray | None) -> "PixelSums":
        """The sums `record()` wrote, with the per-position sum read from beside it."""
        return PixelSums(int(record["images"]), int(record["pixels"]),
                         np.asarray(record["sum"], np.int64),
                         np.asarray(record["outer"], np.int64),
                         None if image_sum is None else image_sum.astype(np.int64))


def decode_rgb(jpeg: bytes) -> np.ndarray:
    """JPEG bytes -> HWC uint8 RGB: libjpeg-turbo through simplejpeg (the same pixels as
    Pillow's libjpeg-turbo decode, tested, in about 60 % of its time); what simplejpeg cannot
    read (not a JPEG) goes to Pillow."""
    try:
        return simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    except ValueError:
        with Image.open(io.BytesIO(jpeg)) as img:
            return np.asarray(img.convert("RGB"))


class Accumulator:
    """Adds images into exact sums fast (see the module docstring); `sums()` reads them out."""

    def __init__(self, mean_image: bool) -> None:
        self.mean_image = mean_image
        self.images = self.pixels = 0
        self._outer = [0] * len(PAIRS)  # Python ints: exact
        self._sum = [0, 0, 0]
        self._total: np.ndarray | None = None  # flushed per-position sum (int64)
        self._image_sum: np.ndarray | None = None  # uint32, since the last flush
        self._since_flush = 0
        self._planes = np.empty((3, 0), np.uint32)
        self._product = np.empty(0, np.uint32)

    def add(self, rgb: np.ndarray) -> None:
        """Add one HWC uint8 RGB image."""
        pixels = rgb.shape[0] * rgb.shape[1]
        if self._planes.shape[1] != pixels:
            self._planes = np.empty((3, pixels), np.uint32)
            self._product = np.empty(min(pixels, CHUNK), np.uint32)
        np.copyto(self._planes, rgb.reshape(-1, 3).T)  # the one conversion pass
        for start in range(0, pixels, CHUNK):  # a chunk's sums fit uint32 exactly
            planes = self._planes[:, start:start + CHUNK]
            product = self._product[:planes.shape[1]]
            for k, (i, j) in enumerate(PAIRS):
                np.multiply(planes[i], planes[j], out=product)
                self._outer[k] += int(product.sum(dtype=np.uint32))
            if not self.mean_image:  # else sum x is the per-position sum's total, at the end
                for i in range(3):
                    self._sum[i] += int(planes[i].sum(dtype=np.uint32))
        self.images, self.pixels = self.images + 1, self.pixels + pixels
        if self.mean_image:
            if self._image_sum is None:
                self._image_sum = np.zeros(rgb.shape, np.uint32)
            np.add(self._image_sum, rgb, out=self._image_sum)
            self._since_flush += 1
            if self._since_flush == FLUSH:
                self._flush()

    def _flush(self) -> None:
        """Move the per-position uint32 sum into the int64 total."""
        flushed = self._image_sum.astype(np.int64)
        self._total = flushed if self._total is None else self._total + flushed
        self._image_sum.fill(0)
        self._since_flush = 0

    def sums(self) -> PixelSums:
        """Everything added so far, as exact integer sums."""
        outer = np.zeros((3, 3), np.int64)
        for (i, j), value in zip(PAIRS, self._outer):
            outer[i, j] = outer[j, i] = value
        image_sum, total = None, np.asarray(self._sum, np.int64)
        if self.mean_image and self.images:
            image_sum = self._image_sum.astype(np.int64)
            if self._total is not None:
                image_sum += self._total
            total = image_sum.sum((0, 1))
        return PixelSums(self.images, self.pixels, total, outer, image_sum)


def sums_path(record_path: Path) -> Path:
    """Where a shard record's per-position sum lives: `<stem>.sums.npy` beside `<stem>.json`."""
    return record_path.with_name(record_path.stem + ".sums.npy")


def save_image_sum(path: Path, image_sum: np.ndarray) -> None:
    """A shard's per-position sum as uint32 .npy (a shard's sum of uint8 values fits)."""
    if image_sum.max(initial=0) >= 1 << 32:
        raise ValueError(f"{path}: per-position sum too large for uint32")
    buffer = io.BytesIO()
    np.save(buffer, image_sum.astype(np.uint32))
    LocalStore(path.parent).write_bytes(path.name, buffer.getvalue())


def record_sums(record: dict, record_path: Path) -> PixelSums | None:
    """A shard record's pixel sums (with the per-position sum from beside it), None when the
    shard was built without them."""
    small = record.get("pixel_sums")
    if small is None:
        return None
    side = sums_path(record_path)
    image_sum = np.load(side) if side.exists() else None
    return PixelSums.from_record(small, image_sum)
