"""SGD with the paper's or PyTorch's momentum rule (paper section 5); the lr schedule is in
`schedule.py`.

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
