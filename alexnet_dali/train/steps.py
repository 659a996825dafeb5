"""One SGD step and an endless batch stream: shared by the trainer and `bench train`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple

import torch
import torch.nn.functional as F

from alexnet_dali.train.precision import autocast
from alexnet_dali.loader.integrity import HELD_BACK


class StepOutput(NamedTuple):
    """One step's detached scalars, still on the device: the mean loss and how many of the
    batch's images the model put in their class (top-1, on the augmented training crops)."""

    loss: torch.Tensor
    correct: torch.Tensor


@dataclass
class TrainStep:
    """Takes one SGD step of `model` (maybe DDP- or compile-wrapped) with `optimizer`."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    input_device: torch.device  # where the batch goes (the first tower's device when split)
    precision: str  # "bf16" (autocast) or "fp32"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        """One step on a batch (images N×3×H×W float, labels N int64); no host sync."""
        images = images.to(self.input_device, non_blocking=True)
        with autocast(self.input_device, self.precision):
            logits = self.model(images)
        labels = labels.to(logits.device, non_blocking=True)
        # the mean over the samples not held back (label HELD_BACK, loader/integrity.py), 0 if none
        # is left: device work only, no host sync
        kept = labels.ne(HELD_BACK).sum().clamp_min(1)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=HELD_BACK,
                               reduction="sum") / kept
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        return StepOutput(loss.detach(), correct)


def endless(loader: Iterable) -> Iterator[Any]:
    """The loader's batches, going on into its next epoch: with max_steps_per_epoch the loader's
    epoch can end inside the trainer's, which must still take its steps."""
    while True:
        yield from loader
