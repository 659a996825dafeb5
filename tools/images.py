"""One source image -> a 256x256 baseline RGB JPEG (paper: shorter side 256, central 256x256 patch).

Decoding detects the format from the content, never the file name. Big JPEGs are decoded at a
reduced DCT scale (Pillow's draft mode, 1/2, 1/4 or 1/8) only while the result keeps a shorter
side of at least `DRAFT_FACTOR` x the target, so the antialiasing resize that follows still has
twice the target's resolution to work from. The resize is Lanczos (a windowed sinc; Pillow widens
the kernel by the scale factor when reducing, so it antialiases) applied directly to the central
square (`resize(box=...)`), equal to "resize the shorter side, then center-crop" without computing
the discarded margins.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

DRAFT_FACTOR = 2
FILTER_NAME = "lanczos"
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # Pillow's own DecompressionBombError threshold


@dataclass(frozen=True)
class ImageSettings:
    """How every image is converted."""

    size: int = 256
    quality: int = 90
    draft: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS


class RejectedImage(Exception):
    """A source file that cannot become a training image; `reason` is a short slug."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB (CMYK, L, LA, P, RGBA, I;16, I, F, ...); alpha is dropped."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        # 16/32-bit or float greyscale: scale its own range to 0..255 rather than clipping
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def decode(data: bytes, settings: ImageSettings) -> Image.Image:
    """Decode header and pixels with reduced-scale JPEG decoding when allowed."""
    if not data:
        raise RejectedImage("empty", "0-byte file")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RejectedImage("not-an-image", "Pillow cannot identify the content") from None
    except Image.DecompressionBombError as e:
        raise RejectedImage("decompression-bomb", str(e)) from None
    except Exception as e:  # noqa: BLE001 - a malformed header raises many kinds
        raise RejectedImage("unreadable", f"{type(e).__name__}: {e}") from None
    width, height = img.size
    if width * height > settings.max_pixels:
        raise RejectedImage(
            "decompression-bomb",
            f"{width}x{height} = {width * height} pixels > limit {settings.max_pixels}",
        )
    if settings.draft and img.format == "JPEG":
        target = settings.size * DRAFT_FACTOR
        img.draft("RGB", (target, target))  # keeps both sides >= target
    try:
        img.load()
    except Exception as e:  # noqa: BLE001 - corrupt data raises OSError, SyntaxError, ...
        text = str(e)
        reason = "truncated" if "truncated" in text or "broken data" in text else "unreadable"
        raise RejectedImage(reason, f"{type(e).__name__}: {e}") from None
    return img


def center_square_resize(img: Image.Image, size: int) -> Image.Image:
    """RGB image -> size x size RGB: the central square, Lanczos-resized."""
    width, height = img.size
    side = min(width, height)
    left = (width - side) / 2
    top = (height - side) / 2
    box = (left, top, left + side, top + side)
    return img.resize((size, size), Image.Resampling.LANCZOS, box=box)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """RGB image -> baseline (non-progressive) JPEG bytes, 4:2:0, fixed settings."""
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality, subsampling="4:2:0", progressive=False,
             optimize=False)
    return out.getvalue()


def convert_image(data: bytes, settings: ImageSettings) -> bytes:
    """Source file bytes -> `size`x`size` RGB JPEG bytes, or RejectedImage with the reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = decode(data, settings)
        try:
            return encode_jpeg(center_square_resize(to_rgb(img), settings.size), settings.quality)
        except Exception as e:  # noqa: BLE001 - one odd file must never stop the run
            raise RejectedImage("unreadable", f"{type(e).__name__}: {e}") from None


def convert_file(path: str, settings: ImageSettings) -> bytes:
    """Read a file and convert it; read errors become RejectedImage('unreadable')."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RejectedImage("unreadable", f"{type(e).__name__}: {e.strerror or e}") from None
    return convert_image(data, settings)


def allow_pixels(max_pixels: int) -> None:
    """Raise Pillow's global bomb limit to `max_pixels` so our own check (in `decode`) decides."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files are rejected, not grey-filled
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
