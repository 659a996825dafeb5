"""The learning-rate schedule (paper section 5): per epoch, a linear warmup, then constant, step
drops at `optim.step_epochs`, or /10 when the val error stops improving (the paper's plateau rule,
at most `optim.max_drops` times), times a per-step linear warm-up over the run's first
`optim.warmup_steps` steps (short runs). Every parameter group runs at its `lr_mult` times the
lr."""

from __future__ import annotations

from typing import Any

import torch

from alexnet_dali.config.schema import OptimConfig


PAPER_BATCH = 128  # the batch the paper's lr is for (optim.lr_scaling = "linear")


def peak_lr(cfg: OptimConfig, batch_size: int) -> float:
    """The lr before any drop: optim.lr, or with lr_scaling "linear" optim.lr x batch / 128."""
    return cfg.lr * batch_size / PAPER_BATCH if cfg.lr_scaling == "linear" else cfg.lr


class LRSchedule:
    """Per-epoch lr: linear warmup, then constant, step drops, or /10 on a val-error plateau;
    times a per-step linear warm-up over the run's first `warmup_steps` steps. `batch_size` (the
    global batch) matters only with lr_scaling "linear"."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                 batch_size: int = PAPER_BATCH):
        self.optimizer, self.cfg = optimizer, cfg
        self.peak = peak_lr(cfg, batch_size)
        self.base_lr = self.peak  # the epoch's lr (drops, epoch warm-up)
        self.factor = 1.0  # the step warm-up's share of it
        self.drops = 0
        self.best = float("inf")
        self.bad_epochs = 0
        self.apply(0)

    @property
    def lr(self) -> float:
        """The lr in use now (the weights'; a group with `lr_mult` m runs at m times it)."""
        return self.base_lr * self.factor

    def _set(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_mult", 1.0)

    def apply(self, epoch: int) -> None:
        """Set every group's lr for (0-based) `epoch` from the warmup and the drops so far."""
        cfg = self.cfg
        if cfg.schedule == "step":
            self.drops = sum(epoch >= e for e in cfg.step_epochs)
        lr = self.peak * 0.1**self.drops
        if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
            lr = self.peak * (epoch + 1) / cfg.warmup_epochs
        self.base_lr = lr
        self._set()

    def at_step(self, global_step: int) -> None:
        """Before the step after `global_step` steps: the step warm-up's lr, (step + 1) /
        warmup_steps of the epoch's; host arithmetic only, and nothing once it is over."""
        steps = self.cfg.warmup_steps
        factor = min(1.0, (global_step + 1) / steps) if steps else 1.0
        if factor != self.factor:
            self.factor = factor
            self._set()

    def end_epoch(self, epoch: int, val_error: float | None, at_chance: bool = False) -> bool:
        """Record epoch `epoch`'s val error and set the next epoch's lr; True if the lr dropped.
        With `hold_at_chance`, an epoch whose val error is at chance does not count."""
        before = self.drops
        held = self.cfg.hold_at_chance and at_chance
        if self.cfg.schedule == "plateau" and val_error is not None and not held:
            if val_error < self.best:
                self.best, self.bad_epochs = val_error, 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= self.cfg.plateau_patience and self.drops < self.cfg.max_drops:
                    self.drops += 1
                    self.bad_epochs = 0
        self.apply(epoch + 1)
        return self.drops > before

    def state_dict(self) -> dict[str, Any]:
        """Plain floats/ints (loadable with weights_only=True)."""
        return {"drops": self.drops, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any], epoch: int) -> None:
        """Restore the counters and set the lr of `epoch`."""
        self.drops = int(state["drops"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.apply(epoch)
