"""SGD with the paper's or PyTorch's momentum rule, and the learning-rate schedule (paper sec. 5).

The paper's update is  v <- m*v - wd*lr*w - lr*g ;  w <- w + v.  PyTorch's SGD keeps
v <- m*v + g + wd*w ;  w <- w - lr*v.  While lr is constant the two produce identical weights
(the paper's v is -lr times PyTorch's); just after an lr drop the paper's velocity still carries
steps scaled by the old lr, whereas PyTorch's rescales the whole velocity by the new lr at once.

Both rules see two parameter groups: "weights" (conv kernels, FC matrices) and "biases" (every
1-D parameter). Weight decay applies to the weights only unless `optim.bias_decay`, as in
cuda-convnet2 (`wc`) and Caffe (`decay_mult: 0`); the biases' lr is `optim.bias_lr_mult` times
the weights' (1: the paper's equal rate; 2: both codebases). Each group keeps its `lr_mult`, so
the schedule scales every group's lr alike.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from alexnet_dali.config.schema import OptimConfig


class PaperSGD(torch.optim.Optimizer):
    """The paper's rule: v <- momentum*v - wd*lr*w - lr*grad ; w <- w + v (fp32 state)."""

    def __init__(self, params: Iterable, lr: float, momentum: float, weight_decay: float):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer API
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                v = state["velocity"]
                v.mul_(m).add_(p, alpha=-wd * lr).add_(p.grad, alpha=-lr)
                p.add_(v)
        return loss


def param_groups(params: Iterable[torch.Tensor], cfg: OptimConfig) -> list[dict[str, Any]]:
    """[weights (ndim > 1), biases (ndim <= 1)] groups, with their weight decay and lr_mult.

    Empty groups are left out; the order of parameters within a group is the model's.
    """
    weights, biases = [], []
    for p in params:
        (weights if p.ndim > 1 else biases).append(p)
    groups = [
        {"name": "weights", "params": weights, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
        {"name": "biases", "params": biases, "lr_mult": cfg.bias_lr_mult,
         "weight_decay": cfg.weight_decay if cfg.bias_decay else 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(params: Iterable, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum by `cfg.update` ("pytorch" or "paper") over `param_groups(params)`."""
    groups = param_groups(params, cfg)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_mult"]
    if cfg.update == "paper":
        return PaperSGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a saved state (momentum buffers) but keep this run's group settings.

    torch's `load_state_dict` also restores each group's lr, weight decay and lr_mult; the run's
    config must win (a resume with --set optim.bias_lr_mult=2 means it), so they are put back.
    """
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, settings):
        group.update(own)


def group_sizes(optimizer_state: dict[str, Any]) -> list[int]:
    """Parameters per group of an optimizer `state_dict()` (a saved one or a live one's)."""
    return [len(group["params"]) for group in optimizer_state["param_groups"]]


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
