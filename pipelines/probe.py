"""What the installed DALI can do here: its version, the driver's CUDA version, and whether the
`cpu` (libjpeg-turbo) and `mixed` (nvJPEG + hardware) JPEG decoders decode a JPEG.

Used by `alexnet-dali doctor`'s environment report; every function answers with a string or a
number and never raises.
"""

from __future__ import annotations

import io

import numpy as np


def dali_version() -> str:
    """nvidia.dali's version (whichever CUDA flavour of the wheel is installed)."""
    try:
        import nvidia.dali
    except ImportError as e:
        return f"not importable: {e}"
    return nvidia.dali.__version__


def driver_cuda_version() -> int:
    """The CUDA version the NVIDIA driver supports (e.g. 12040), 0 without a driver."""
    try:
        from nvidia.dali import backend

        return int(backend.GetCudaVersion())
    except Exception:  # noqa: BLE001 - a report line, never a crash
        return 0


def tiny_jpeg() -> bytes:
    """A 16x16 baseline 4:2:0 JPEG (the shards' kind)."""
    from PIL import Image

    pixels = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90, subsampling="4:2:0")
    return out.getvalue()


def decoder_status(device: str, cuda: bool) -> str:
    """"usable" if DALI's `cpu` or `mixed` decoder decodes a JPEG here, else why not."""
    from nvidia.dali import fn, pipeline_def

    if device == "mixed" and not cuda:
        return "not usable: no CUDA device"

    @pipeline_def(batch_size=1, num_threads=1, device_id=0 if device == "mixed" else None)
    def probe():
        return fn.decoders.image(fn.external_source(name="jpegs"), device=device)

    try:
        pipe = probe()
        pipe.build()
        pipe.feed_input("jpegs", [np.frombuffer(tiny_jpeg(), dtype=np.uint8)])
        (out,) = pipe.run()
        shape = tuple((out.as_cpu() if device == "mixed" else out)[0].shape())
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return f"not usable: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return "usable" if shape == (16, 16, 3) else f"not usable: decoded shape {shape}"
