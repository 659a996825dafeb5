"""When the training loop talks to the host and to the other ranks: only at sync points.

A step that calls `.item()` or all-reduces a flag makes the CPU wait for the GPU (and every rank
for the slowest one), so the loop keeps the loss and the count of correct top-1 guesses on the
device and the ranks agree on them and on a stop signal only every `log_every` steps, at each
mid-epoch checkpoint and at the epoch's end: one all-reduce of three numbers and one copy to
the host per sync point. `EpochTrain` adds the agreed windows up into the epoch's train numbers
on the host.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch

from alexnet_dali import distributed
from alexnet_dali.config import TrainConfig
from alexnet_dali.steps import StepOutput


def is_sync_point(cfg: TrainConfig, step_in_epoch: int, total: int) -> bool:
    """True after every `log_every`-th step, each checkpoint step and the epoch's last step."""
    return (step_in_epoch % cfg.log_every == 0 or step_in_epoch == total
            or bool(cfg.checkpoint_every and step_in_epoch % cfg.checkpoint_every == 0))


class Agreed(NamedTuple):
    """A window's numbers, the same on every rank: mean loss and top-1 error over its steps
    and all ranks, images/s, whether any rank must stop, and how many images it covered."""

    loss: float
    top1_err: float
    rate: float
    stop: bool
    images: int


class LossWindow:
    """The training loss and correct guesses summed on the device since the last sync point,
    and the images/s."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window now (after a sync point or a save)."""
        self.loss_sum: torch.Tensor | None = None
        self.correct_sum: torch.Tensor | None = None
        self.steps = self.images = 0
        self.start = time.perf_counter()

    def add(self, step: StepOutput, images: int) -> None:
        """One step's detached scalars (on their device) and the images of the step on all
        ranks: asynchronous adds, no host sync."""
        loss, correct = step.loss.float(), step.correct.float()
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.correct_sum = correct if self.correct_sum is None else self.correct_sum + correct
        self.steps += 1
        self.images += images

    def agree(self, stop_pending: bool, world_size: int) -> Agreed:
        """The window's numbers over all ranks, and whether any rank must stop.

        Collective: every rank calls it at the same step. One all-reduce, one host copy.
        """
        if self.loss_sum is None or self.correct_sum is None:
            raise RuntimeError("LossWindow.agree before any step was added")
        packed = torch.stack([self.loss_sum, self.correct_sum,
                              self.loss_sum.new_tensor(float(stop_pending))])
        loss_sum, correct, signalled = distributed.all_reduce(packed).tolist()
        rate = self.images / max(time.perf_counter() - self.start, 1e-9)
        return Agreed(loss_sum / (self.steps * world_size), 1 - correct / max(self.images, 1),
                      rate, signalled > 0, self.images)


class EpochTrain:
    """The epoch's training loss and top-1 error so far, from the agreed windows (host floats).

    Over the steps this process ran: after a mid-epoch resume, those since the resume."""

    def __init__(self) -> None:
        self.loss_sum = self.wrong = 0.0
        self.images = 0

    def add(self, window: Agreed) -> None:
        """Count an agreed window, weighted by its images."""
        self.loss_sum += window.loss * window.images
        self.wrong += window.top1_err * window.images
        self.images += window.images

    def result(self) -> dict[str, float] | None:
        """{"loss", "top1_err"} of the epoch, or None before any window."""
        if not self.images:
            return None
        return {"loss": self.loss_sum / self.images, "top1_err": self.wrong / self.images}
