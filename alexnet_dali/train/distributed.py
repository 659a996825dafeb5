"""Process-group setup for `torchrun` data parallelism (NCCL on GPU, gloo on CPU) and small helpers.

Run without torchrun, everything here degrades to a single process (rank 0 of 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from alexnet_dali.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (the one that logs and writes files)."""
        return self.rank == 0


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto`: cuda:<local_rank> if CUDA is available, else cpu; `cuda` without CUDA: an error."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference in ("cuda", "gpu") or preference.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {preference}: CUDA is not available; use --device cpu")
        return torch.device(preference if ":" in preference else f"cuda:{local_rank}")
    if preference == "auto":
        cuda = torch.cuda.is_available()
        return torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    raise ConfigError(f"unknown device {preference!r}: use auto, cpu or cuda")


def setup(device_preference: str) -> DistInfo:
    """Join the torchrun job if WORLD_SIZE > 1 (env:// rendezvous), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True when running as part of a multi-process group."""
    return dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place sum/max over ranks (a no-op alone); returns the tensor."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

