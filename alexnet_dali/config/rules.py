"""The conditions between config fields (`RULES`), checked on every resolved config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from alexnet_dali.config.schema import ARCHITECTURES, TrainConfig
from alexnet_dali.errors import ConfigError

FINAL_MAP = 6  # fc6 takes conv5's pooled map at 6x6 (model/alexnet.py)


def conv5_side(crop: int, overlap_pool: bool) -> int:
    """Side of conv5's pooled map for a `crop`-sized input: conv1 (11x11, stride 4, padding 2),
    then three 3/2 max pools (2/2 without overlap); conv2-5 keep the size (model/alexnet.py)."""
    side = (crop + 2 * 2 - 11) // 4 + 1
    for _ in range(3):
        side = (side - 3) // 2 + 1 if overlap_pool else side // 2
    return side


@dataclass(frozen=True)
class Rule:
    """A condition between fields: `holds(cfg)`, else an error naming `keys` and their values."""

    keys: tuple[str, ...]
    holds: Callable[[TrainConfig], bool]
    needs: str


RULES = (
    Rule(("model_parallel", "model.arch", "model.towers"),
         lambda c: not c.model_parallel or (ARCHITECTURES[c.model.arch].towers
                                            and c.model.towers == 2),
         "model_parallel = true splits the paper's two towers: it needs model.arch = 'paper' "
         "and model.towers = 2"),
    Rule(("device", "loader.device"),
         lambda c: not (c.device == "cpu" and c.loader.device == "gpu"),
         "loader.device = 'gpu' decodes on the training GPU: it needs device 'cuda' or 'auto'"),
    Rule(("augment.crop", "model.overlap_pool"),
         lambda c: conv5_side(c.augment.crop, c.model.overlap_pool) == FINAL_MAP,
         f"fc6 takes a {FINAL_MAP}x{FINAL_MAP} conv5 map: augment.crop must be 223..254 with "
         "model.overlap_pool = true, 195..226 without"),
    Rule(("model.bias_one", "model.init"),
         lambda c: c.model.bias_one == 1.0 or c.model.init in ("code", "paper"),
         "model.bias_one sets the biases that init 'code' and 'paper' set to 1; init 'caffe' sets "
         "its own 0.1 and 'he' zeros"),
    Rule(("augment.mean_rgb", "augment.std_rgb"),
         lambda c: len(c.augment.mean_rgb) in (0, 3) and len(c.augment.std_rgb) in (0, 3),
         "augment.mean_rgb and augment.std_rgb each take 3 values (R, G, B, on the 0-255 scale), "
         "or none to use pca.json's"),
)


def check_rules(cfg: TrainConfig, where: str = "config") -> None:
    """ConfigError for the first cross-field rule `cfg` breaks."""
    for rule in RULES:
        if not rule.holds(cfg):
            have = ", ".join(f"{key} = {_get(cfg, key)!r}" for key in rule.keys)
            raise ConfigError(f"{where}: {rule.needs} (have {have})")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
