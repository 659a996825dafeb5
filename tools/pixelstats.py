"""Exact, mergeable pixel statistics of decoded JPEGs: what pca.json is computed from.

Two producers, one arithmetic: `pca-stats` decodes the train shards again, `preprocess --pca`
decodes each JPEG it has just encoded (the bytes that go into the shard), so both see the same
pixels and sum the same integers: images, pixels, sum x (3,), sum x x^T (3, 3) and the
per-position sum for the mean image. Integer sums add exactly, so any split into workers,
shards or `--part` hosts, merged in any order, gives the same result.

Speed (`Accumulator.add`, profiled against the decode): one pass copies an image into float32
channel planes; the 3x3 products and sum x are float32 dot products over blocks of `BLOCK`
pixels. Every block's partial sums are integers below 2**24 (256 * 255**2 = 16,646,400 <
16,777,216), which float32 holds exactly, and the blocks are added in float64, exact below
2**53. (A float64 copy costs twice the memory traffic; one BLAS product of 3 x N by N x 3 was
slower still, and interleaved RGB reductions slower than planes.) The per-position sum is added
in place into uint32 (`FLUSH` images at most before it moves into int64).
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

BLOCK = 256  # pixels per float32 partial product: 256 * 255**2 < 2**24, exact
FLUSH = 1 << 16  # images per uint32 per-position sum (65536 * 255 < 2**32)


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
        self._outer = np.zeros((3, 3), np.float64)  # exact below 2**53
        self._sum = np.zeros(3, np.float64)
        self._total: np.ndarray | None = None  # flushed per-position sum (int64)
        self._image_sum: np.ndarray | None = None  # uint32, since the last flush
        self._since_flush = 0
        self._planes: np.ndarray | None = None

    def _buffer(self, pixels: int) -> np.ndarray:
        """float32 channel planes (3, blocks * BLOCK), zero past `pixels`."""
        size = -(-pixels // BLOCK) * BLOCK
        if self._planes is None or self._planes.shape[1] != size or self._pixels != pixels:
            self._planes = np.zeros((3, size), np.float32)
            self._pixels = pixels
        return self._planes

    def add(self, rgb: np.ndarray) -> None:
        """Add one HWC uint8 RGB image."""
        pixels = rgb.shape[0] * rgb.shape[1]
        planes = self._buffer(pixels)
        np.copyto(planes[:, :pixels], rgb.reshape(-1, 3).T)  # the one conversion pass
        blocks = planes.reshape(3, -1, BLOCK)
        # per block exact in float32 (< 2**24); the blocks are added in float64
        self._outer += np.einsum("ibk,jbk->ijb", blocks, blocks).sum(-1, dtype=np.float64)
        if not self.mean_image:  # else sum x is the per-position sum's total, at the end
            self._sum += blocks.sum(-1).sum(-1, dtype=np.float64)
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
        image_sum, total = None, np.rint(self._sum).astype(np.int64)
        if self.mean_image and self.images:
            image_sum = self._image_sum.astype(np.int64)
            if self._total is not None:
                image_sum += self._total
            total = image_sum.sum((0, 1))
        return PixelSums(self.images, self.pixels, total, np.rint(self._outer).astype(np.int64),
                         image_sum)


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
