"""Mixed precision: which a run uses, and one autocast rule for training steps and evaluation."""
from __future__ import annotations

import contextlib

import torch

from alexnet_dali.config.schema import TrainConfig


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when `precision` is bf16, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_of(cfg: TrainConfig, device: torch.device) -> str:
    """auto -> bf16 on CUDA, fp32 elsewhere."""
    if cfg.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return cfg.precision
