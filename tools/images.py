"""One source image -> a 256x256 baseline RGB JPEG (paper: shorter side 256, central 256x256 patch).

Decoding detects the format from the content, never the file name. Two decoders (recorded in the
manifest's settings, since they give slightly different bytes):
- `turbo` (default): YCbCr and greyscale JPEGs (nearly all of ImageNet) are decoded by
  libjpeg-turbo through simplejpeg at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both
  sides >= `TURBO_FACTOR` x the target, and the output is encoded by libjpeg-turbo; every other
  file (CMYK JPEGs, PNG, GIF, ..., and JPEGs libjpeg-turbo finds corrupt) goes to Pillow;
- `pillow`: Pillow for everything, big JPEGs decoded at 1/2, 1/4 or 1/8 scale (draft mode) only
  while both sides stay >= `DRAFT_FACTOR` x the target.
The resize is a Lanczos-3 (a windowed sinc, widened by the scale factor when reducing, so it
antialiases) applied directly to the central square, equal to "resize the shorter side, then
center-crop" without computing the discarded margins. Two resizers (recorded too):
- `vips` (default): libvips' SIMD Lanczos-3 on Pillow's exact sampling grid (`lanczos`); the
  few geometries it cannot place exactly (upscaling, ...) go to Pillow;
- `pillow`: Pillow's `resize(box=central square)`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import PIL
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

from alexnet_dali.tools import lanczos

DRAFT_FACTOR = 2
TURBO_FACTOR = 1
FILTER_NAME = "lanczos"
DECODERS = ("turbo", "pillow")
RESIZERS = ("vips", "pillow")
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # Pillow's own DecompressionBombError threshold


@dataclass(frozen=True)
class ImageSettings:
    """How every image is converted."""

    size: int = 256
    quality: int = 90
    draft: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    decoder: str = "turbo"
    resizer: str = "vips"

    def describe(self) -> dict:
        """The decoder and resizer settings and library versions (they decide the output
        bytes)."""
        turbo = self.decoder == "turbo"
        libraries = [f"simplejpeg {simplejpeg.__version__}"] if turbo else []
        if self.resizer == "vips":
            libraries.append(f"libvips {lanczos.vips_version()}")
        return {"decoder": self.decoder, "resizer": self.resizer,
                "scale_factor": (TURBO_FACTOR if turbo else DRAFT_FACTOR) if self.draft else None,
                "libraries": ", ".join([*libraries, f"Pillow {PIL.__version__}"])}


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


def check_pixels(width: int, height: int, settings: ImageSettings) -> None:
    """Reject images over the pixel limit (decompression bombs), from the header alone."""
    if width * height > settings.max_pixels:
        raise RejectedImage(
            "decompression-bomb",
            f"{width}x{height} = {width * height} pixels > limit {settings.max_pixels}",
        )


def dct_scale(shorter: int, target: int) -> int:
    """The largest reduction 1, 2, 4 or 8 that keeps the shorter side >= target. Only powers of
    two: libjpeg-turbo's other n/8 scales (3/8, 3/4, ...) measurably blur (see docs/DATA.md)."""
    scale = 1
    while scale < 8 and shorter // (scale * 2) >= target:
        scale *= 2
    return scale


def decode_turbo(data: bytes, settings: ImageSettings) -> np.ndarray | None:
    """A YCbCr or greyscale JPEG -> HWC uint8 RGB by libjpeg-turbo, DCT-scaled while both sides
    stay >= TURBO_FACTOR x size; None for anything else (Pillow decodes or rejects it)."""
    if not simplejpeg.is_jpeg(data):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    check_pixels(width, height, settings)
    if colorspace not in ("YCbCr", "Gray"):
        return None  # CMYK/YCCK: Pillow's conversion
    scale = dct_scale(min(width, height), settings.size * TURBO_FACTOR) if settings.draft else 1
    try:  # asking for ceil(side / scale) makes libjpeg-turbo pick exactly 1/scale
        return simplejpeg.decode_jpeg(data, "rgb", min_height=-(-height // scale),
                                      min_width=-(-width // scale))
    except ValueError:  # strict: also corrupt data libjpeg would only warn about
        return None


def decode(data: bytes, settings: ImageSettings) -> Image.Image:
    """Decode header and pixels with Pillow, with reduced-scale JPEG decoding when allowed."""
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
    check_pixels(*img.size, settings)
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


def encode_jpeg(img: Image.Image | np.ndarray, quality: int, decoder: str = "pillow") -> bytes:
    """RGB image (or HWC uint8 array) -> baseline (non-progressive) JPEG bytes, 4:2:0, accurate
    DCT, by the encoder of `decoder`'s library (libjpeg-turbo for both; Pillow adds its own
    header fields)."""
    if decoder == "turbo":
        return simplejpeg.encode_jpeg(np.asarray(img), quality, "rgb", "420", fastdct=False)
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality, subsampling="4:2:0", progressive=False,
             optimize=False)
    return out.getvalue()


def resize(pixels: np.ndarray | None, img: Image.Image | None,
           settings: ImageSettings) -> Image.Image | np.ndarray:
    """Decoded RGB (an HWC uint8 array or a Pillow image) -> the resized central square."""
    if settings.resizer == "vips":
        out = lanczos.center_square_vips(np.asarray(img) if pixels is None else pixels,
                                         settings.size)
        if out is not None:
            return out
    return center_square_resize(Image.fromarray(pixels) if img is None else img, settings.size)


def convert_image(data: bytes, settings: ImageSettings) -> bytes:
    """Source file bytes -> `size`x`size` RGB JPEG bytes, or RejectedImage with the reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if not data:
            raise RejectedImage("empty", "0-byte file")
        pixels = decode_turbo(data, settings) if settings.decoder == "turbo" else None
        img = to_rgb(decode(data, settings)) if pixels is None else None
        try:
            return encode_jpeg(resize(pixels, img, settings), settings.quality, settings.decoder)
        except Exception as e:  # noqa: BLE001 - one odd file must never stop the run
            raise RejectedImage("unreadable", f"{type(e).__name__}: {e}") from None


def allow_pixels(max_pixels: int) -> None:
    """Raise Pillow's global bomb limit to `max_pixels` so our own check (in `decode`) decides."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files are rejected, not grey-filled
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
