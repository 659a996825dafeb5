"""The environment part of the doctor's report: versions, devices, extras, usable decoders
(what DALI can do comes from `pipelines/probe.py`, the only place outside the graphs that asks)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess

from alexnet_dali.pipelines.probe import dali_version, decoder_status, driver_cuda_version

SMI_TIMEOUT_S = 30  # nvidia-smi can hang on a wedged driver
EXTRAS = ("scipy", "pyarrow", "onnx", "onnxruntime", "matplotlib", "tensorboard", "simplejpeg",
          "pyvips", "pyvips-binary")  # pyvips-binary: the libvips that preprocess resizes with


def package_version(name: str) -> str:
    """The installed version of distribution `name`, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def smi_driver() -> tuple[str, str]:
    """(driver version, "") from nvidia-smi, or ("", why it gave none); ("", "") without it.

    A hang, a binary that cannot run or a failing driver is a reason, never an exception: the
    doctor's report is most wanted exactly when the driver is broken.
    """
    if not shutil.which("nvidia-smi"):
        return "", ""
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "", f"nvidia-smi did not answer within {SMI_TIMEOUT_S} s"
    except (OSError, subprocess.SubprocessError) as e:
        return "", f"nvidia-smi could not run ({e})"
    lines = (done.stdout or "").strip().splitlines()
    if done.returncode != 0 or not lines:
        said = (done.stderr or done.stdout or "").strip().splitlines()
        return "", f"nvidia-smi exited with status {done.returncode}" + (
            f": {said[0].strip()}" if said else "")
    return lines[0].strip(), ""


def driver_version() -> str:
    """The NVIDIA driver version (nvidia-smi) and the CUDA version it supports (DALI), or none;
    why nvidia-smi gave no version, when it failed."""
    cuda = driver_cuda_version()
    smi, failure = smi_driver()
    if not cuda and not smi and not failure:
        return "none (no NVIDIA driver found)"
    supports = f"supports CUDA {cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
    return ", ".join(part for part in (smi and f"driver {smi}", supports, failure) if part)


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
        ("DALI CPU decoder (libjpeg-turbo)", decoder_status("cpu", torch.cuda.is_available())),
        ("DALI GPU decoder (nvJPEG + hardware)",
         decoder_status("mixed", torch.cuda.is_available())),
    ]
    return lines
