"""AlexNet as the paper specifies it (two towers, LRN, overlapping pooling), and torchvision's.

One module, `AlexNet`, builds every architecture `model.arch` names, from its row of
`config.schema.ARCHITECTURES` (widths, towers, LRN, where dropout goes):

- `paper`: conv1 96 (11×11/s4/p2), conv2 256 (5×5, towers), conv3 384 (both towers), conv4 384
  (towers), conv5 256 (towers), fc6 4096, fc7 4096, fc8 classes. ReLU, LRN after conv1 and conv2
  within each tower, 3/2 max pooling, dropout on the outputs of fc6 and fc7. 60,965,224 parameters.
- `owt`: torchvision's single-tower "one weird trick" net (64/192/384/256/256 kernels, no LRN,
  dropout on the inputs of fc6 and fc7, as torchvision orders it). `towers` and `lrn` do not apply.

On one device the towers are grouped convolutions (groups=2); `parallel.py` runs the same
parameters on two devices. Layer attributes are named as in the paper (`conv1` … `fc8`) so the
state dict reads `conv1.weight`, …, `fc8.bias`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from alexnet_dali.config.schema import ARCHITECTURES, ModelConfig
from alexnet_dali.errors import ConfigError

# Which layers see only their own tower (the widths are in ARCHITECTURES).
TOWER_ONLY = {"conv2", "conv4", "conv5"}  # conv1 sees the image, conv3 sees both towers
BIAS_ONE = {"conv2", "conv4", "conv5", "fc6", "fc7"}  # the paper's bias-1 layers; others 0
# Weight std per layer: the paper's text gives 0.01 everywhere; the authors' code (the 2012
# cuda-convnet layer file of this net, `initW`; cuda-convnet2's alike) uses 0.03 on conv3-5.
INIT_STD = {"paper": dict.fromkeys(("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                                    "fc8"), 0.01)}
INIT_STD["code"] = {**INIT_STD["paper"], "conv3": 0.03, "conv4": 0.03, "conv5": 0.03}
INIT_STD["caffe"] = {**INIT_STD["paper"], "fc6": 0.005, "fc7": 0.005}  # bvlc_alexnet
CAFFE_BIAS_ONE = 0.1  # bvlc_alexnet: "initialization to 1 gave flat loss"
FINAL_MAP = 6  # spatial side of conv5's pooled output for a 224 input

# The paper's LRN constants (section 3.3).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


class TowerLRN(nn.Module):
    """Local response normalisation within each tower: N×C×H×W → N×C×H×W, same dtype.

    b_i = a_i / (k + s·Σ_{|j-i| ≤ n/2, j in i's tower} a_j²)^β with s = α/n for `formula`
    "code" (what cuda-convnet's cross-map kernel computes: its layer parser divides the
    configured α by n; Caffe does the same) or s = α for "text" (the paper's formula read
    literally, 5× stronger). PyTorch's `local_response_norm` computes k + (alpha/n)·Σ, so it gets
    alpha = α or α·n. Channels are split into `towers` groups so the window stops at a tower edge.
    """

    def __init__(self, towers: int, size: int = LRN_SIZE, alpha: float = LRN_ALPHA,
                 beta: float = LRN_BETA, k: float = LRN_K, formula: str = "code") -> None:
        super().__init__()
        if formula not in ("code", "text"):
            raise ConfigError(f"model.lrn_formula={formula!r}: use 'code' or 'text'")
        self.towers, self.size, self.alpha, self.beta, self.k = towers, size, alpha, beta, k
        self.formula = formula
        self.torch_alpha = alpha if formula == "code" else alpha * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c % self.towers:
            raise ValueError(f"TowerLRN: {c} channels do not split into {self.towers} towers")
        # Fold the towers into the batch dimension: the window then stops at each tower's edge.
        grouped = x.reshape(n * self.towers, c // self.towers, h, w)
        out = F.local_response_norm(grouped, self.size, self.torch_alpha, self.beta, self.k)
        return out.reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return (f"towers={self.towers}, size={self.size}, alpha={self.alpha}, "
                f"formula={self.formula}, beta={self.beta}, k={self.k}")


class AlexNet(nn.Module):
    """AlexNet: N×3×224×224 float → logits N×num_classes (same dtype as the activations)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg  # checked where configs are built (config.from_dict / resolve_config)
        arch = ARCHITECTURES[cfg.arch]
        towers = cfg.towers if arch.towers else 1
        c1, c2, c3, c4, c5 = arch.widths
        self.conv1 = nn.Conv2d(3, c1, 11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2, groups=towers)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.conv4 = nn.Conv2d(c3, c4, 3, padding=1, groups=towers)
        self.conv5 = nn.Conv2d(c4, c5, 3, padding=1, groups=towers)
        self.fc6 = nn.Linear(c5 * FINAL_MAP * FINAL_MAP, cfg.fc_width)
        self.fc7 = nn.Linear(cfg.fc_width, cfg.fc_width)
        self.fc8 = nn.Linear(cfg.fc_width, cfg.num_classes)
        lrn = arch.lrn and cfg.lrn
        self.norm1 = TowerLRN(towers, formula=cfg.lrn_formula) if lrn else nn.Identity()
        self.norm2 = TowerLRN(towers, formula=cfg.lrn_formula) if lrn else nn.Identity()
        self.pool1, self.pool2, self.pool5 = (make_pool(cfg.overlap_pool) for _ in range(3))
        self.act = nn.Tanh() if cfg.activation == "tanh" else nn.ReLU()
        # The paper drops fc6's and fc7's outputs; torchvision drops fc6's and fc7's inputs.
        inputs = arch.dropout_on == "inputs"
        self.drop5 = make_dropout(cfg.dropout if inputs else 0.0)
        self.drop6 = make_dropout(cfg.dropout)
        self.drop7 = make_dropout(0.0 if inputs else cfg.dropout)
        init_weights(self, cfg)

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images N×3×224×224 → pooled conv5 maps N×C5×6×6."""
        x = self.pool1(self.norm1(self.act(self.conv1(x))))
        x = self.pool2(self.norm2(self.act(self.conv2(x))))
        x = self.act(self.conv3(x))
        x = self.act(self.conv4(x))
        return self.pool5(self.act(self.conv5(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images N×3×224×224 → fc7 activations after the nonlinearity, N×fc_width (4096)."""
        x = self.drop5(torch.flatten(self.conv_features(x), 1))
        x = self.drop6(self.act(self.fc6(x)))
        return self.act(self.fc7(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.drop7(self.features(x)))


def make_pool(overlap: bool) -> nn.MaxPool2d:
    """3/2 overlapping max pooling (the paper), or 2/2; both map 55→27→13→6."""
    return nn.MaxPool2d(3, 2) if overlap else nn.MaxPool2d(2, 2)


def make_dropout(p: float) -> nn.Module:
    """Dropout with probability p, or Identity for p = 0 (no module left to switch on)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """`code`/`paper`/`caffe`: weights N(0, INIT_STD[init][layer]); biases `bias_one` (1; Caffe's
    init 0.1) on conv2/4/5 fc6/7 and 0 elsewhere.

    `he`: Kaiming-normal weights (fan-in, gain for the activation), biases 0.
    """
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        layer = getattr(model, name)
        if cfg.init in INIT_STD:
            nn.init.normal_(layer.weight, mean=0.0, std=INIT_STD[cfg.init][name])
            one = CAFFE_BIAS_ONE if cfg.init == "caffe" else cfg.bias_one
            nn.init.constant_(layer.bias, one if name in BIAS_ONE else 0.0)
        else:
            nonlinearity = "linear" if name == "fc8" else cfg.activation
            fan_in = layer.weight[0].numel()
            std = nn.init.calculate_gain(nonlinearity) / math.sqrt(fan_in)
            nn.init.normal_(layer.weight, mean=0.0, std=std)
            nn.init.zeros_(layer.bias)


def build_model(cfg: ModelConfig) -> AlexNet:
    """The network of `cfg` on the CPU in fp32; the caller moves it (and sets channels_last)."""
    return AlexNet(cfg)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level layer (`conv1` … `fc8`) plus `total`."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        layer = name.split(".")[0]
        counts[layer] = counts.get(layer, 0) + p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def layer_macs(model: nn.Module, image_size: int = 224) -> dict[str, int]:
    """Multiply-accumulates per image of each conv/linear layer's forward pass, plus `total`.

    Counted from the layers as built: output elements × the MACs per output (the weight of one
    output unit: in_channels/groups × k × k, or in_features), by a forward hook on one image.
    """
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            counts[name] = output[0].numel() * module.weight[0].numel()
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    counts["total"] = sum(counts.values())
    return counts
