"""When the training loop talks to the host and to the other ranks: only at sync points.

A step that calls `.item()` or all-reduces a flag makes the CPU wait for the GPU (and every rank
for the slowest one), so the loop keeps the loss and the count of correct top-1 guesses on the
device, and the ranks agree on them, on a stop signal and on the run's health
(`LossWindow.agree`'s extra values: the weights' finiteness flags, damaged samples met) only
every `log_every` steps, at each mid-epoch checkpoint and at the epoch's end: one all-reduce of
one small vector and one copy to the host per sync point. `StopRequest` is the signal flag they
agree on; `EpochTrain` adds the agreed windows up into the epoch's train numbers on the host.
"""

from __future__ import annotations

import signal
import time
from typing import Any, NamedTuple, Sequence

import torch

from alexnet_dali.train import distributed
from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.train.steps import StepOutput


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop saves at the next step boundary and exits cleanly.

    Alone, the flag is read after every step. Under DDP the ranks agree on it only at the sync
    points of `cadence.is_sync_point`, together with the loss, so that no step waits on a
    collective and a host copy: every rank stops at the same sync point (at most `log_every`
    steps later).
    """

    def __init__(self) -> None:
        self.signal_name = ""
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        # The same signal twice (Ctrl-C Ctrl-C) stops at once, without a checkpoint. A different
        # one does not: torchrun follows a Ctrl-C's SIGINT with SIGTERM to its workers.
        if name == self.signal_name:
            self.restore()
            raise KeyboardInterrupt(f"second {name}: stopped without a checkpoint")
        self.signal_name = self.signal_name or name  # no printing here: not reentrant-safe

    def pending(self) -> bool:
        """True if this process was signalled (a Python flag: no device or collective work)."""
        return bool(self.signal_name)

    def follow(self) -> None:
        """Another rank was signalled (the ranks agreed to stop): stop here too, under its name."""
        self.signal_name = self.signal_name or "a signal to another rank"

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, old in self._old.items():
            signal.signal(sig, old)


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

    def agree(self, stop_pending: bool, world_size: int, counts: Sequence[float] = (),
              device_values: torch.Tensor | None = None) -> Agreement:
        """The window's mean loss and top-1 error over its steps and all ranks, images/s,
        whether any rank must stop, and the sums over ranks of `counts` (host numbers) and
        `device_values` (a 1-D float32 tensor on the loss's device, e.g. per-parameter flags: no
        host sync to make).

        Collective: every rank calls it at the same step with as many values. One all-reduce,
        one host copy.
        """
        if self.loss_sum is None or self.correct_sum is None:
            raise RuntimeError("LossWindow.agree before any step was added")
        parts = [self.loss_sum.view(1), self.correct_sum.view(1),
                 self.loss_sum.new_tensor([float(stop_pending), *counts])]
        if device_values is not None:
            parts.append(device_values.to(self.loss_sum.device))
        values = distributed.all_reduce(torch.cat(parts)).tolist()
        rate = self.images / max(time.perf_counter() - self.start, 1e-9)
        host_end = 3 + len(counts)
        return Agreement(values[0] / (self.steps * world_size),
                         1 - values[1] / max(self.images, 1), rate, values[2] > 0,
                         values[3:host_end], values[host_end:], self.images)


class Agreement(NamedTuple):
    """What the ranks agreed on at a sync point (`LossWindow.agree`)."""

    loss: float  # mean over the window's steps and the ranks (nan/inf if any rank's was)
    top1_err: float  # over the window's images on all ranks (held-back samples count as wrong)
    images_per_s: float
    stop: bool  # some rank was signalled
    counts: list[float]  # the host counts, summed over ranks
    device_values: list[float]  # the device values, summed over ranks
    images: int  # the window's images on all ranks


class EpochTrain:
    """The epoch's training loss and top-1 error so far, from the agreed windows (host floats).

    Over the steps this process ran: after a mid-epoch resume, those since the resume."""

    def __init__(self) -> None:
        self.loss_sum = self.wrong = 0.0
        self.images = 0

    def add(self, window: Agreement) -> None:
        """Count an agreed window, weighted by its images."""
        self.loss_sum += window.loss * window.images
        self.wrong += window.top1_err * window.images
        self.images += window.images

    def result(self) -> dict[str, float] | None:
        """{"loss", "top1_err"} of the epoch, or None before any window."""
        if not self.images:
            return None
        return {"loss": self.loss_sum / self.images, "top1_err": self.wrong / self.images}
