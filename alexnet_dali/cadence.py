"""When the training loop talks to the host and to the other ranks: only at sync points.

A step that calls `.item()` or all-reduces a flag makes the CPU wait for the GPU (and every rank
for the slowest one), so the loop keeps the loss on the device and the ranks agree on the loss
and on a stop signal only every `log_every` steps, at each mid-epoch checkpoint and at the
epoch's end: one all-reduce of two numbers and one copy to the host per sync point.
"""

from __future__ import annotations

import time

import torch

from alexnet_dali import distributed
from alexnet_dali.config import TrainConfig


def is_sync_point(cfg: TrainConfig, step_in_epoch: int, total: int) -> bool:
    """True after every `log_every`-th step, each checkpoint step and the epoch's last step."""
    return (step_in_epoch % cfg.log_every == 0 or step_in_epoch == total
            or bool(cfg.checkpoint_every and step_in_epoch % cfg.checkpoint_every == 0))


class LossWindow:
    """The training loss summed on the device since the last sync point, and the images/s."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window now (after a sync point or a save)."""
        self.loss_sum: torch.Tensor | None = None
        self.steps = self.images = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, images: int) -> None:
        """One step's detached scalar loss (on its device): an asynchronous add, no host sync."""
        loss = loss.float()
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.steps += 1
        self.images += images

    def agree(self, stop_pending: bool, world_size: int) -> tuple[float, float, bool]:
        """(mean loss over the window and all ranks, images/s, whether any rank must stop).

        Collective: every rank calls it at the same step. One all-reduce, one host copy.
        """
        if self.loss_sum is None:
            raise RuntimeError("LossWindow.agree before any step was added")
        packed = torch.stack([self.loss_sum, self.loss_sum.new_tensor(float(stop_pending))])
        loss_sum, signalled = distributed.all_reduce(packed).tolist()
        rate = self.images / max(time.perf_counter() - self.start, 1e-9)
        return loss_sum / (self.steps * world_size), rate, signalled > 0
