"""The central square, Lanczos-3 resized, by libvips (pyvips) on Pillow's exact sampling grid.

Pillow's `resize(box=central square)` samples output pixel x at source position
`o + (x + 0.5) * r` (r = side / size), with `o = (width - side) / 2`: a half pixel whenever the
margin is odd (500x375: o = 62.5). libvips' `reduce` is the same antialiased Lanczos-3 (support
3r; SIMD; 12-bit coefficients where Pillow has 22) with the same convention, but it starts at a
whole pixel and centres its outputs on its input. So for an odd margin it reduces a symmetric
window of whole pixels, chosen so that its size + 2k outputs fall on Pillow's grid, and the
middle `size` are kept (`axis_window`); measured 53-58 dB PSNR between the two, at most 2-4
levels apart (tests/test_preprocess_images.py). What it cannot place exactly (upscaling, a
side divisible by 256 with an odd margin) returns None and Pillow resizes it. A built pipeline is
kept per geometry and re-run on the next image of that shape (building one costs as much as
running it).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from alexnet_dali.errors import DataError

MAX_REDUCE = 64  # larger factors (only from huge non-JPEG sources) are left to Pillow


def axis_window(length: int, side: int, size: int) -> tuple[int, int, int] | None:
    """(first source pixel c, pixels, extra outputs k per end) of one axis; None: no exact grid.

    The window [c, length - c) is symmetric, so libvips centres its size + 2k outputs on the
    same middle as Pillow's box; k is chosen so that libvips' rounding of the output count
    lands output k on Pillow's first sample (|o - c - k r| < r / 4, o = Pillow's left edge)
    and every Lanczos tap of the kept outputs lies inside the window.
    """
    margin, r = length - side, side / size
    if margin % 2 == 0:
        return margin // 2, side, 0
    left = margin / 2
    k = math.ceil(3.25 + 1.5 / r)
    while k * r <= left:
        c = round(left - k * r)
        if abs(left - k * r - c) < r / 4 - 1e-6 and left - c >= 3 * r + 1.5:
            return c, length - 2 * c, k
        k += 1
    for k in range(1, size + 1):  # small margins: widen past the edges (copied edge pixels)
        if 2 * k * side % size == 0 and (2 * k * side // size) % 2 == 1:
            widen = 2 * k * side // size  # 2 k r: odd, so the window starts on a whole pixel
            return (margin - widen) // 2, side + widen, k
    return None


def _vips():
    try:
        import pyvips
    except (ImportError, OSError) as e:  # pyvips without a libvips it can load raises OSError
        raise DataError(f"the vips resizer needs pyvips and libvips ({type(e).__name__}: {e}); "
                        "pip install pyvips pyvips-binary, or use --resizer pillow") from None

    pyvips.concurrency_set(1)  # one thread: the parallelism is preprocess's worker processes
    pyvips.cache_set_max(0)  # no operation cache: the pipelines worth keeping are kept here
    return pyvips


_PYVIPS = None
PIPELINES: OrderedDict[tuple, tuple] = OrderedDict()  # geometry -> (buffer, input, output)
KEEP_PIPELINES = 8  # ImageNet is mostly a handful of sizes (500x375, 375x500, 500x333, ...)
KEEP_BYTES = 4 << 20  # larger windows (rare) get a pipeline of their own each time


def _pipeline(window: tuple[int, int, int], place: tuple[int, int, int, int], scale: float):
    """(buffer, input, output) of a libvips reduce of a window of shape `window`, placed at
    (left, top) in a (width, height) canvas of copied edge pixels when it does not fill it."""
    height, width, bands = window
    buffer = np.empty(window, np.uint8)
    source = img = _PYVIPS.Image.new_from_memory(buffer.data, width, height, bands, "uchar")
    if place != (0, 0, width, height):  # lazily: only the edge pixels are copied
        img = img.embed(*place, extend="copy")
    return buffer, source, img.reduce(scale, scale, kernel="lanczos3")


def _reduced(window: np.ndarray, place: tuple[int, int, int, int], scale: float) -> tuple:
    """The reduce of `window`'s pixels: (output width, height, bytes).

    Building a libvips pipeline costs about as much as running it (~0.6 ms for 375^2 -> 256^2),
    so one pipeline per geometry is kept and re-run on each new image's pixels, copied into its
    buffer; `invalidate` drops whatever libvips cached of the previous pixels."""
    key = (window.shape, place, scale)
    if window.nbytes > KEEP_BYTES:
        buffer, source, out = _pipeline(window.shape, place, scale)
    else:
        if key not in PIPELINES:
            PIPELINES[key] = _pipeline(window.shape, place, scale)
            if len(PIPELINES) > KEEP_PIPELINES:
                PIPELINES.popitem(last=False)
        PIPELINES.move_to_end(key)
        buffer, source, out = PIPELINES[key]
    np.copyto(buffer, window)
    source.invalidate()
    return out.width, out.height, out.write_to_memory()


def center_square_vips(pixels: np.ndarray, size: int) -> np.ndarray | None:
    """HWC uint8 RGB -> size x size x 3 uint8: the central square, Lanczos-3; None where
    Pillow must do it (see the module docstring)."""
    global _PYVIPS
    height, width = pixels.shape[:2]
    side = min(width, height)
    windows = axis_window(width, side, size), axis_window(height, side, size)
    if side < size or side > MAX_REDUCE * size or None in windows or pixels.ndim != 3:
        return None
    (x, w, kx), (y, h, ky) = windows
    if _PYVIPS is None:
        _PYVIPS = _vips()
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    out_w, out_h, data = _reduced(pixels[y0:y1, x0:x1], (x0 - x, y0 - y, w, h), side / size)
    if (out_w, out_h) != (size + 2 * kx, size + 2 * ky):
        return None  # rounded to another size: Pillow's grid is the one to match
    out = np.frombuffer(data, np.uint8).reshape(out_h, out_w, -1)
    return np.ascontiguousarray(out[ky:ky + size, kx:kx + size]) if kx or ky else out


def vips_version() -> str:
    """libvips' version, e.g. '8.18.7'."""
    global _PYVIPS
    if _PYVIPS is None:
        _PYVIPS = _vips()
    return ".".join(str(_PYVIPS.version(i)) for i in range(3))
