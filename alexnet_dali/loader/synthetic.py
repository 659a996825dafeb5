"""Synthetic loaders with the DALI loaders' interface: `bench train`'s compute baseline, fast tests.

Batches are a pure function of (seed, epoch, step, rank), so `checkpoint()` is just the position
and a restored loader replays exactly what an uninterrupted one would have yielded. Each class
shifts the three channels by its own constant, so a model can learn the labels. Batches made
on the host reach a CUDA device as the DALI loaders' do (`transfer.host_to_device`).
"""

from __future__ import annotations

import json
from typing import Iterator

import torch

from alexnet_dali.loader.transfer import host_to_device

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _make_batch(
    gen: torch.Generator, batch: int, num_classes: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """N x 3 x size x size float32 images (unit-std noise + class colour), int64 labels N."""
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    images = torch.randn(batch, 3, size, size, generator=gen)
    angle = labels.float()[:, None] * (2.0 * torch.pi / num_classes) + torch.arange(3) * 2.1
    images += torch.cos(angle)[:, :, None, None]
    return images, labels


class SyntheticTrainLoader:
    """Yields `steps_per_epoch` batches of (N x 3 x 224 x 224 float, N int64) per epoch."""

    def __init__(
        self, *, batch_size: int, steps_per_epoch: int, num_classes: int, rank: int = 0,
        world_size: int = 1, device: torch.device | str = "cpu", seed: int = 0,
        dtype: str = "float32", channels_last: bool = False, size: int = 224,
        fixed: bool = False, checkpoint: str | bytes | None = None,
    ):
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.num_classes, self.rank, self.world_size = num_classes, rank, world_size
        self.device, self.seed, self.size = torch.device(device), seed, size
        self.dtype, self.channels_last, self.fixed = _DTYPES[dtype], channels_last, fixed
        self.epoch, self.position = 0, 0
        if checkpoint:
            state = json.loads(checkpoint)
            self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._fixed_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `step` of the current epoch: the same tensors for the same (seed, epoch, step,
        rank), so a resumed loader continues the same stream."""
        if self.fixed and self._fixed_batch is not None:
            return self._fixed_batch
        gen = torch.Generator().manual_seed(
            ((self.seed * 1_000_003 + self.epoch) * 1_000_003 + step) * 64 + self.rank
        )
        images, labels = _make_batch(gen, self.batch_size, self.num_classes, self.size)
        images = host_to_device(images, self.device).to(self.dtype)  # on a GPU: cast there
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        out = (images, host_to_device(labels, self.device))
        if self.fixed:
            self._fixed_batch = out
        return out

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.position >= self.steps_per_epoch:  # the previous epoch was used up
            self.epoch, self.position = self.epoch + 1, 0
        while self.position < self.steps_per_epoch:
            batch = self.batch_at(self.position)
            self.position += 1
            yield batch

    def checkpoint(self) -> str:
        """The position after the last yielded batch, as JSON."""
        return json.dumps({"epoch": self.epoch, "position": self.position})


class SyntheticEvalLoader:
    """`samples` images split across ranks; yields (images, labels, valid) like the DALI one."""

    def __init__(
        self, *, samples: int, batch_size: int, num_classes: int, rank: int = 0,
        world_size: int = 1, device: torch.device | str = "cpu", seed: int = 1,
        tencrop: bool = False, size: int = 224,
    ):
        self.samples, self.batch_size, self.num_classes = samples, batch_size, num_classes
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.seed, self.tencrop, self.size = seed, tencrop, size

    def __len__(self) -> int:
        per_rank = -(-self.samples // self.world_size)  # ceil
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        images, labels = _make_batch(gen, self.samples, self.num_classes, self.size)
        per_rank = -(-self.samples // self.world_size)
        index = torch.arange(self.rank * per_rank, (self.rank + 1) * per_rank)
        valid = index < self.samples
        index = index.clamp(max=self.samples - 1)
        for start in range(0, per_rank, self.batch_size):
            sel = index[start : start + self.batch_size]
            batch = images[sel]
            if self.tencrop:
                batch = torch.stack([batch, batch.flip(-1)] * 5, dim=1)
            yield (host_to_device(batch, self.device), host_to_device(labels[sel], self.device),
                   host_to_device(valid[start : start + self.batch_size], self.device))
