"""The learning-rate schedule (paper section 5): per epoch, a linear warmup, then constant, step
drops at `optim.step_epochs`, or /10 when the val error stops improving (the paper's plateau rule,
at most `optim.max_drops` times). Every parameter group runs at its `lr_mult` times the lr."""

from __future__ import annotations

from typing import Any

import torch

from alexnet_dali.config.schema import OptimConfig


class LRSchedule:
    """Per-epoch lr: linear warmup, then constant, step drops, or /10 on a val-error plateau."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig):
        self.optimizer, self.cfg = optimizer, cfg
        self.base_lr = cfg.lr
        self.drops = 0
        self.best = float("inf")
        self.bad_epochs = 0
        self.apply(0)

    @property
    def lr(self) -> float:
        """The lr in use now (the weights'; a group with `lr_mult` m runs at m times it)."""
        return self.base_lr

    def apply(self, epoch: int) -> None:
        """Set every group's lr for (0-based) `epoch` from the warmup and the drops so far."""
        cfg = self.cfg
        if cfg.schedule == "step":
            self.drops = sum(epoch >= e for e in cfg.step_epochs)
        lr = cfg.lr * 0.1**self.drops
        if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
            lr = cfg.lr * (epoch + 1) / cfg.warmup_epochs
        self.base_lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)

    def end_epoch(self, epoch: int, val_error: float | None) -> bool:
        """Record epoch `epoch`'s val error and set the next epoch's lr; True if the lr dropped."""
        before = self.drops
        if self.cfg.schedule == "plateau" and val_error is not None:
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
