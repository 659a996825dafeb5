"""Frozen configuration dataclasses and the one place that builds them from TOML, dicts, flags.

`resolve_config`: defaults (or a checkpoint's config) < TOML/JSON file < --set key=value < named
flags. Every value is converted to its field's declared type and checked against the range
declared next to the field (`bounded`) as it comes in, so the error names its source; then the
cross-field `RULES` check the result. Unknown keys are errors (with the section and the valid
keys named), so a typo never silently falls back to a default. All of it runs before any data is
read.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

from alexnet_dali.config.fields import Source, bounded, build, convert_tree
from alexnet_dali.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """The train/eval augmentation recipe (paper section 4.1); every step can be switched off."""

    crop: int = bounded(224, ge=1)  # side of the square crop of the 256x256 shard image (RULES)
    random_crop: bool = True  # False: center crop at train time too (ablation)
    flip: bool = True  # horizontal flip with p=0.5
    pca_noise: bool = True  # eigen-colour noise, alpha ~ N(0, pca_std) per image
    pca_std: float = bounded(0.1, ge=0)
    # shift = P·(α∘√λ) ("sqrt": the authors' code, cuda-convnet2, scales with the pixels) or
    # P·(α∘λ) ("eigenvalue": the paper's text read literally; ~115x stronger on ImageNet's 0-255
    # pixels). docs/PIPELINE.md
    pca_scale: Literal["sqrt", "eigenvalue"] = "sqrt"
    # cuda-convnet2 scales each noised training batch by 1/(1 + pca_std) (not in the paper)
    pca_rescale: bool = False
    mean: Literal["channel", "image", "none"] = "channel"  # what is subtracted from each pixel
    std_normalize: bool = False  # divide by the per-channel std too (not the paper; short runs)
    # Explicit per-channel values (0-255 scale) instead of pca.json's mean / std; empty: pca.json's.
    # Imported torchvision weights use 255·(0.485, 0.456, 0.406) and 255·(0.229, 0.224, 0.225).
    mean_rgb: tuple[float, ...] = bounded((), ge=0, le=255)  # 3 values or none (RULES)
    std_rgb: tuple[float, ...] = bounded((), gt=0)  # 3 values or none (RULES)


@dataclass(frozen=True)
class LoaderConfig:
    """How the DALI pipeline runs and what it hands the trainer (the per-rank batch is derived
    from `TrainConfig.batch_size`, builders.per_rank_batch)."""

    num_threads: int = bounded(2, ge=1)  # DALI CPU threads per rank
    device: Literal["auto", "cpu", "gpu"] = "auto"  # where decoding and augmentation run
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    prefetch: int = bounded(2, ge=1)  # DALI prefetch queue depth
    hw_decoder_load: float = bounded(0.65, ge=0, le=1)  # share of JPEGs for the A100/H100 decoder
    shuffle_buffer: int = bounded(4096, ge=1)  # random_shuffle initial_fill of the reader
    # Each shard's sha256 checked as it is first read, off the training thread
    # (loader_integrity.py): a damaged sample stops the run ("stop"), is held back and counted
    # ("skip"), or: "off".
    shard_check: Literal["stop", "skip", "off"] = "stop"


@dataclass(frozen=True)
class ModelConfig:
    """The network: the paper's two-tower AlexNet or torchvision's one-weird-trick variant."""

    arch: Literal["paper", "owt"] = "paper"
    num_classes: int = bounded(1000, ge=1)
    towers: Literal[1, 2] = 2  # 2: conv2/4/5 see their own tower (groups=2); 1: all see all
    lrn: bool = True
    # LRN denominator k + (α/n)·Σa² ("code": what cuda-convnet and Caffe compute with α = 1e-4,
    # n = 5) or k + α·Σa² ("text": the paper's formula read literally). docs/PAPER.md
    lrn_formula: Literal["code", "text"] = "code"
    overlap_pool: bool = True  # 3/2 max pooling; False: 2/2
    dropout: float = bounded(0.5, ge=0, lt=1)  # on fc6 and fc7 only; 0 switches it off
    activation: Literal["relu", "tanh"] = "relu"
    init: Literal["paper", "he"] = "paper"  # paper: N(0, 0.01), biases 1 on conv2/4/5 fc6/7
    # units of fc6 and fc7 (the paper's 4096; fewer: a smaller net for small data, and the tests'
    # kilobyte-sized checkpoints). Even: model parallelism puts half on each device.
    fc_width: int = bounded(4096, ge=2)


@dataclass(frozen=True)
class OptimConfig:
    """SGD and the learning-rate schedule (paper section 5)."""

    lr: float = bounded(0.01, gt=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    weight_decay: float = bounded(5e-4, ge=0)
    update: Literal["pytorch", "paper"] = "pytorch"
    bias_decay: bool = False  # False: weight decay on weights only (1-D params undecayed)
    bias_lr_mult: float = bounded(1.0, gt=0)  # biases' lr / weights' lr (cuda-convnet2, Caffe: 2)
    schedule: Literal["plateau", "step", "constant"] = "plateau"
    plateau_patience: int = bounded(1, ge=1)  # epochs without val-error improvement, then /10
    max_drops: int = bounded(3, ge=0)  # the paper divides the lr by 10 three times in all
    step_epochs: tuple[int, ...] = bounded((30, 60, 80), ge=0)  # 0-based epochs that drop it
    warmup_epochs: int = bounded(0, ge=0)


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, optimiser, loop and checkpoint settings."""

    data: str = ""
    run_dir: str = "runs/alexnet"
    epochs: int = bounded(90, ge=1)
    batch_size: int = bounded(128, ge=1)  # global: divided evenly across ranks
    seed: int = bounded(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    channels_last: bool | None = None  # None: on for GPU, off for CPU
    compile: bool = False
    model_parallel: bool = False
    keep_checkpoints: int = bounded(3, ge=1)
    log_every: int = bounded(10, ge=1)  # steps between metric lines
    max_steps_per_epoch: int = bounded(0, ge=0)  # 0: the whole epoch (smoke tests: a few)
    deterministic: bool = False
    checkpoint_every: int = bounded(0, ge=0)  # steps between mid-epoch checkpoints; 0: none
    threads: int = bounded(0, ge=0)  # torch intra-op threads per rank; 0: torch's default
    tensorboard: bool = True  # RUN/tensorboard event files when tensorboard is installed
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)


T = TypeVar("T")

# Keys older versions wrote into config.json and checkpoints, dropped when read again:
# (dataclass, key) -> why it is gone.
RETIRED_KEYS = {
    ("LoaderConfig", "batch_size"): "the per-rank batch is derived from the global batch_size",
}

FINAL_MAP = 6  # fc6 takes conv5's pooled map at 6x6 (model.py)


def conv5_side(crop: int, overlap_pool: bool) -> int:
    """Side of conv5's pooled map for a `crop`-sized input: conv1 (11x11, stride 4, padding 2),
    then three 3/2 max pools (2/2 without overlap); conv2-5 keep the size (model.py)."""
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
         lambda c: not c.model_parallel or (c.model.arch == "paper" and c.model.towers == 2),
         "model_parallel = true splits the paper's two towers: it needs model.arch = 'paper' "
         "and model.towers = 2"),
    Rule(("device", "loader.device"),
         lambda c: not (c.device == "cpu" and c.loader.device == "gpu"),
         "loader.device = 'gpu' decodes on the training GPU: it needs device 'cuda' or 'auto'"),
    Rule(("augment.crop", "model.overlap_pool"),
         lambda c: conv5_side(c.augment.crop, c.model.overlap_pool) == FINAL_MAP,
         f"fc6 takes a {FINAL_MAP}x{FINAL_MAP} conv5 map: augment.crop must be 223..254 with "
         "model.overlap_pool = true, 195..226 without"),
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


def _source(where: str | Source) -> Source:
    if isinstance(where, Source):
        return where
    return Source("file" if where.endswith((".toml", ".json")) else "other", where)


def from_dict(cls: type[T], values: dict[str, Any], where: str | Source = "config") -> T:
    """Build config dataclass `cls` from a nested dict (missing keys keep their defaults): every
    value converted to its field's type and checked; a ConfigError naming `where` otherwise."""
    source = _source(where)
    cfg = build(cls, convert_tree(cls, values, source, dropped=frozenset(RETIRED_KEYS)))
    if isinstance(cfg, TrainConfig):
        check_rules(cfg, source.name)
    return cfg


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists), for JSON/TOML and checkpoints."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file, with an error that names the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into a copy of `base` (override wins)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


CONFIG_JSON = "config.json"  # the resolved config a run saves (save_resolved_config)

# named CLI flag -> dotted config key
FLAG_KEYS = {
    "run_dir": "run_dir", "epochs": "epochs", "batch_size": "batch_size", "lr": "optim.lr",
    "seed": "seed", "device": "device", "precision": "precision", "compile": "compile",
    "model_parallel": "model_parallel", "max_steps_per_epoch": "max_steps_per_epoch",
    "threads": "threads", "workers": "loader.num_threads", "arch": "model.arch",
    "init": "model.init", "update": "optim.update", "schedule": "optim.schedule",
    "checkpoint_every": "checkpoint_every", "keep_checkpoints": "keep_checkpoints",
    "deterministic": "deterministic", "pca_noise": "augment.pca_noise",
    "std_normalize": "augment.std_normalize", "log_every": "log_every",
    "skip_bad_samples": "loader.shard_check",
}


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def parse_set(item: str) -> dict[str, Any]:
    """`optim.lr=0.001` -> {"optim": {"lr": 0.001}}; the value is read as TOML, else a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set model.lrn=false")
    key, raw = (s.strip() for s in item.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return _nested(key, value)


def save_resolved_config(cfg: TrainConfig) -> Path:
    """Write RUN/config.json (the resolved config, loadable again with --config)."""
    path = Path(cfg.run_dir) / CONFIG_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    return path


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML config, or a run's saved config.json."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
    return load_toml(path)


def resolve_config(data: str | None, *, config_file: str | None = None, sets: tuple[str, ...] = (),
                   flags: dict[str, Any] | None = None, base: dict[str, Any] | None = None,
                   base_name: str = "checkpoint config") -> TrainConfig:
    """defaults (or `base`, e.g. a checkpoint's config) < config file < --set < named flags.

    Each source is converted and checked on its own (its errors name it), then the merged config
    against `RULES`.
    """
    dropped = frozenset(RETIRED_KEYS)
    layers = [] if base is None else [(base, Source("other", base_name))]
    if config_file:
        layers.append((load_config_file(config_file), Source("file", str(config_file))))
    layers += [(parse_set(item), Source("set", item)) for item in sets]
    layers += [(_nested(FLAG_KEYS[name], value), Source("flag", "--" + name.replace("_", "-")))
               for name, value in (flags or {}).items() if value is not None]
    values: dict[str, Any] = {}  # what no source sets keeps its default
    for layer, source in layers:
        values = merge(values, convert_tree(TrainConfig, layer, source, dropped=dropped))
    if data is not None:
        values["data"] = str(data)
    cfg = build(TrainConfig, values)
    check_rules(cfg)
    return cfg
