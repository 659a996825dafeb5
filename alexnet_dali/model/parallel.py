"""The paper's two-GPU AlexNet: tower 1 on one device, tower 2 on another.

Every layer's output units (conv kernels, FC neurons) are cut in two halves along dim 0 of its
weight: tower t owns rows `tensor_split(2)[t]` of `conv1` … `fc8` and lives on `devices[t]`.
Activations cross devices only where the paper's GPUs communicate:

- conv1, conv2 (+ LRN, pool), conv4, conv5 (+ pool): each tower on its own inputs, no transfer;
- conv3: each tower reads both towers' conv2 maps (one exchange);
- fc6, fc7, fc8: each device computes half the neurons from all of the previous layer's outputs
  (an all-gather before each), and the logits are gathered on `devices[0]`.

Cutting dim 0 is exactly the grouped net's layout (a groups=2 conv orders group 0's kernels
first, each reading its own half of the inputs), so one rule converts the parameters both ways.
`state_dict()` returns the grouped net's names and shapes (tensors on the CPU) and
`load_state_dict()` accepts either layout, so checkpoints are interchangeable with `build_model`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from alexnet_dali.config.schema import ARCHITECTURES, ModelConfig
from alexnet_dali.errors import ConfigError
from alexnet_dali.model.alexnet import FINAL_MAP, AlexNet, TowerLRN, make_dropout, make_pool

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
TOWERS = 2


def halves(n: int) -> list[int]:
    """Sizes of the two towers' shares of `n` units (the first gets the extra one)."""
    return [len(part) for part in torch.arange(n).tensor_split(TOWERS)]


def split_state_dict(grouped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Grouped state dict (`conv2.weight` 256×48×5×5) → split (`conv2.0.weight` 128×48×5×5, …)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in grouped.items():
        layer, _, leaf = key.rpartition(".")
        if layer.rpartition(".")[2] in LAYERS:
            for t, part in enumerate(value.tensor_split(TOWERS)):
                out[f"{layer}.{t}.{leaf}"] = part
        else:
            out[key] = value
    return out


def merge_state_dict(split: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split state dict (`conv2.0.weight`, `conv2.1.weight`) → grouped (`conv2.weight`), on CPU."""
    out: dict[str, torch.Tensor] = {}
    for key, value in split.items():
        head, _, leaf = key.rpartition(".")
        layer, _, tower = head.rpartition(".")
        if layer.rpartition(".")[2] not in LAYERS or tower not in ("0", "1"):
            out[key] = value
        elif tower == "0":
            other = split[f"{layer}.1.{leaf}"]
            out[f"{layer}.{leaf}"] = torch.cat([value.detach().cpu(), other.detach().cpu()])
    return out


class ModelParallelAlexNet(nn.Module):
    """The paper net on two devices: N×3×224×224 → logits N×classes on `devices[0]`."""

    def __init__(self, cfg: ModelConfig,
                 devices: Sequence[str | torch.device] | None = None) -> None:
        super().__init__()
        if not ARCHITECTURES[cfg.arch].towers or cfg.towers != TOWERS:
            raise ConfigError("model parallelism splits the paper's two towers: use "
                              "model.arch='paper' and model.towers=2 (or drop --model-parallel)")
        if cfg.fc_width % TOWERS:
            raise ConfigError(f"model.fc_width = {cfg.fc_width}: model parallelism puts half of "
                              "fc6's and fc7's units on each device; use an even width")
        self.devices = _resolve_devices(devices)
        grouped = AlexNet(cfg).state_dict()  # first, so a seed gives build_model's weights
        self.output_device = self.devices[0]
        c1, c2, c3, c4, c5 = (w // TOWERS for w in ARCHITECTURES[cfg.arch].widths)
        fc_in = TOWERS * c5 * FINAL_MAP * FINAL_MAP
        self.conv1 = _pair(lambda: nn.Conv2d(3, c1, 11, stride=4, padding=2))
        self.conv2 = _pair(lambda: nn.Conv2d(c1, c2, 5, padding=2))
        self.conv3 = _pair(lambda: nn.Conv2d(TOWERS * c2, c3, 3, padding=1))
        self.conv4 = _pair(lambda: nn.Conv2d(c3, c4, 3, padding=1))
        self.conv5 = _pair(lambda: nn.Conv2d(c4, c5, 3, padding=1))
        width = cfg.fc_width
        self.fc6 = _pair(lambda: nn.Linear(fc_in, width // TOWERS))
        self.fc7 = _pair(lambda: nn.Linear(width, width // TOWERS))
        self.fc8 = nn.ModuleList(nn.Linear(width, n) for n in halves(cfg.num_classes))
        # One tower per device: the LRN window never leaves it.
        self.norm = TowerLRN(1, formula=cfg.lrn_formula) if cfg.lrn else nn.Identity()
        self.pool1, self.pool2, self.pool5 = (make_pool(cfg.overlap_pool) for _ in range(3))
        self.act = nn.Tanh() if cfg.activation == "tanh" else nn.ReLU()
        self.drop6, self.drop7 = make_dropout(cfg.dropout), make_dropout(cfg.dropout)
        self.register_state_dict_post_hook(_merge_hook)
        self.register_load_state_dict_pre_hook(_split_hook)
        self.load_state_dict(grouped)
        for t, device in enumerate(self.devices):
            for layer in LAYERS:
                getattr(self, layer)[t].to(device)

    def _towers(self, layer: str, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply each tower's half of `layer` to that tower's input."""
        return [getattr(self, layer)[t](x) for t, x in enumerate(xs)]

    def _gather(self, xs: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Concatenate both towers' activations along dim 1 on `device` (the exchange)."""
        return torch.cat([_move(x, device) for x in xs], dim=1)

    def _fc(self, layer: str, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each device computes its half of `layer`'s neurons from all inputs."""
        return [getattr(self, layer)[t](self._gather(xs, d)) for t, d in enumerate(self.devices)]

    def _fc7(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images → each tower's half of the fc7 activations, on its own device."""
        xs = [_move(x, d) for d in self.devices]
        xs = [self.pool1(self.norm(self.act(h))) for h in self._towers("conv1", xs)]
        xs = [self.pool2(self.norm(self.act(h))) for h in self._towers("conv2", xs)]
        both = [self._gather(xs, d) for d in self.devices]
        xs = [self.act(h) for h in self._towers("conv3", both)]
        xs = [self.act(h) for h in self._towers("conv4", xs)]
        xs = [torch.flatten(self.pool5(self.act(h)), 1) for h in self._towers("conv5", xs)]
        xs = [self.drop6(self.act(h)) for h in self._fc("fc6", xs)]
        return [self.act(h) for h in self._fc("fc7", xs)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images N×3×224×224 → fc7 activations N×fc_width on `devices[0]`."""
        return self._gather(self._fc7(x), self.output_device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = [self.drop7(h) for h in self._fc7(x)]
        return self._gather(self._fc("fc8", xs), self.output_device)


def _move(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to `device`; asynchronous only towards a GPU (a GPU→CPU copy must be waited for)."""
    return x.to(device, non_blocking=device.type == "cuda")


def _pair(make) -> nn.ModuleList:
    return nn.ModuleList(make() for _ in range(TOWERS))


def _resolve_devices(devices: Sequence[str | torch.device] | None) -> tuple[torch.device, ...]:
    if devices is None:
        if torch.cuda.device_count() < TOWERS:
            raise RuntimeError("model parallelism needs two CUDA devices; pass "
                               "devices=('cpu', 'cpu') or ('cpu', 'cuda:0') to try it without")
        devices = ("cuda:0", "cuda:1")
    if len(devices) != TOWERS:
        raise ValueError(f"ModelParallelAlexNet: give {TOWERS} devices, got {list(devices)}")
    return tuple(torch.device(d) for d in devices)


def _merge_hook(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict() post-hook: report the grouped net's keys and shapes."""
    own = {k[len(prefix):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(prefix)}
    state_dict.update({prefix + k: v for k, v in merge_state_dict(own).items()})


def _split_hook(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict() pre-hook: accept the grouped net's keys (split ones pass through)."""
    grouped = [k for k in state_dict if k.startswith(prefix)
               and k[len(prefix):].partition(".")[0] in LAYERS
               and k[len(prefix):].count(".") == 1]
    for key in grouped:
        rel = key[len(prefix):]
        for k, v in split_state_dict({rel: state_dict.pop(key)}).items():
            state_dict[prefix + k] = v
