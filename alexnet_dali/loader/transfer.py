"""Host tensors to the device without blocking the host. Plain torch, no DALI: the DALI hand-off
(`handoff.py`) and the synthetic loaders (`bench train`'s compute baseline) both use it, and the
synthetic ones load no DALI."""

from __future__ import annotations

import torch


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor → `device`: itself (no copy) for the CPU; for CUDA an asynchronous copy
    from pinned memory.

    A copy from pageable memory blocks the host until the GPU has it, a sync per step; from
    pinned memory `non_blocking=True` only queues it on the current stream, and torch's pinned
    allocator keeps the buffer until the copy has run.
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
