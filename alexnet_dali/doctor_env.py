"""The environment part of the doctor's report: versions, devices, extras, usable decoders."""

from __future__ import annotations

import importlib.metadata
import io
import os
import platform
import shutil
import subprocess

EXTRAS = ("scipy", "pyarrow", "onnx", "onnxruntime", "matplotlib", "tensorboard", "simplejpeg")


def package_version(name: str) -> str:
    """The installed version of distribution `name`, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def dali_version() -> str:
    """nvidia.dali's version (whichever CUDA flavour of the wheel is installed)."""
    try:
        import nvidia.dali
    except ImportError as e:
        return f"not importable: {e}"
    return nvidia.dali.__version__


def driver_version() -> str:
    """The NVIDIA driver version (nvidia-smi) and the CUDA version it supports (DALI), or none."""
    try:
        from nvidia.dali import backend

        cuda = backend.GetCudaVersion()  # the driver's CUDA version, 0 without a driver
    except Exception:  # noqa: BLE001 - a report line, never a crash
        cuda = 0
    smi = ""
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
        smi = done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout else ""
    if not cuda and not smi:
        return "none (no NVIDIA driver found)"
    supports = f"supports CUDA {cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
    return ", ".join(part for part in (smi and f"driver {smi}", supports) if part)


def gpu_lines() -> list[tuple[str, str]]:
    """One (`GPU i`, name, memory, compute capability, SMs) entry per CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return [("GPUs", "none visible to torch")]
    lines = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        lines.append((f"GPU {i}", f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute "
                                  f"capability {p.major}.{p.minor}, {p.multi_processor_count} SMs"))
    return lines


def tiny_jpeg() -> bytes:
    """A 16x16 baseline 4:2:0 JPEG (the shards' kind)."""
    import numpy as np
    from PIL import Image

    pixels = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90, subsampling="4:2:0")
    return out.getvalue()


def decoder_status(device: str) -> str:
    """Whether DALI's `cpu` (libjpeg-turbo) or `mixed` (nvJPEG/hardware) decoder decodes a JPEG."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def

    if device == "mixed":
        import torch

        if not torch.cuda.is_available():
            return "not usable: no CUDA device"

    @pipeline_def(batch_size=1, num_threads=1, device_id=0 if device == "mixed" else None)
    def probe():
        return fn.decoders.image(fn.external_source(name="jpegs"), device=device)

    try:
        pipe = probe()
        pipe.build()
        pipe.feed_input("jpegs", [np.frombuffer(tiny_jpeg(), dtype=np.uint8)])
        (out,) = pipe.run()
        shape = tuple(out.as_cpu()[0].shape() if device == "mixed" else out[0].shape())
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return f"not usable: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return "usable" if shape == (16, 16, 3) else f"not usable: decoded shape {shape}"


def environment() -> list[tuple[str, str]]:
    """(what, value) pairs: Python, OS, torch, DALI, driver, GPUs, CPUs, extras, decoders."""
    import torch

    import alexnet_dali

    cuda_build = torch.version.cuda or "none (CPU build)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    lines = [
        ("alexnet-dali", alexnet_dali.__version__),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("OS", platform.platform()),
        ("torch", f"{torch.__version__}, CUDA build {cuda_build}, cuDNN {cudnn or 'none'}"),
        ("DALI", dali_version()),
        ("NVIDIA driver", driver_version()),
        *gpu_lines(),
        ("CPUs", f"{cpus} ({usable} usable by this process)"),
        ("extras", ", ".join(f"{name} {package_version(name)}" for name in EXTRAS)),
        ("DALI CPU decoder (libjpeg-turbo)", decoder_status("cpu")),
        ("DALI GPU decoder (nvJPEG + hardware)", decoder_status("mixed")),
    ]
    return lines
