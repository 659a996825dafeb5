"""Frozen configuration dataclasses and the one place that builds them from TOML, dicts, flags.

`resolve_config`: defaults (or a checkpoint's config) < TOML/JSON file < --set key=value < named
flags, built through `from_dict`. Unknown keys are errors (with the section and the valid keys
named), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from alexnet_dali.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """The train/eval augmentation recipe (paper section 4.1); every step can be switched off."""

    crop: int = 224  # side of the square crop taken from the 256x256 shard image
    random_crop: bool = True  # False: center crop at train time too (ablation)
    flip: bool = True  # horizontal flip with p=0.5
    pca_noise: bool = True  # eigen-colour noise, alpha ~ N(0, pca_std) per image
    pca_std: float = 0.1
    # shift = P·(α∘√λ) ("sqrt": the authors' code, cuda-convnet2, scales with the pixels) or
    # P·(α∘λ) ("eigenvalue": the paper's text read literally; ~115x stronger on ImageNet's 0-255
    # pixels). docs/PIPELINE.md
    pca_scale: Literal["sqrt", "eigenvalue"] = "sqrt"
    # cuda-convnet2 scales each noised training batch by 1/(1 + pca_std) (not in the paper)
    pca_rescale: bool = False
    mean: Literal["channel", "image", "none"] = "channel"  # what is subtracted from each pixel
    std_normalize: bool = False  # divide by the per-channel std too (not the paper; short runs)


@dataclass(frozen=True)
class LoaderConfig:
    """How the DALI pipeline runs and what it hands the trainer (the per-rank batch is derived
    from `TrainConfig.batch_size`, builders.per_rank_batch)."""

    num_threads: int = 2  # DALI CPU threads per rank
    device: Literal["auto", "cpu", "gpu"] = "auto"  # where decoding and augmentation run
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    prefetch: int = 2  # DALI prefetch queue depth
    hw_decoder_load: float = 0.65  # share of JPEGs sent to the A100/H100 hardware decoder
    shuffle_buffer: int = 4096  # random_shuffle initial_fill of the webdataset reader


@dataclass(frozen=True)
class ModelConfig:
    """The network: the paper's two-tower AlexNet or torchvision's one-weird-trick variant."""

    arch: Literal["paper", "owt"] = "paper"
    num_classes: int = 1000
    towers: int = 2  # 2: conv2/4/5 see their own tower (groups=2); 1: every layer sees all
    lrn: bool = True
    # LRN denominator k + (α/n)·Σa² ("code": what cuda-convnet and Caffe compute with α = 1e-4,
    # n = 5) or k + α·Σa² ("text": the paper's formula read literally). docs/PAPER.md
    lrn_formula: Literal["code", "text"] = "code"
    overlap_pool: bool = True  # 3/2 max pooling; False: 2/2
    dropout: float = 0.5  # on fc6 and fc7 only; 0 switches it off
    activation: Literal["relu", "tanh"] = "relu"
    init: Literal["paper", "he"] = "paper"  # paper: N(0, 0.01), biases 1 on conv2/4/5 fc6/7


@dataclass(frozen=True)
class OptimConfig:
    """SGD and the learning-rate schedule (paper section 5)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    update: Literal["pytorch", "paper"] = "pytorch"
    bias_decay: bool = False  # False: weight decay on weights only (1-D params undecayed)
    bias_lr_mult: float = 1.0  # biases' lr / weights' lr (cuda-convnet2 and Caffe use 2)
    schedule: Literal["plateau", "step", "constant"] = "plateau"
    plateau_patience: int = 1  # epochs without val-error improvement before lr /= 10
    max_drops: int = 3  # the paper divides the lr by 10 three times in all
    step_epochs: tuple[int, ...] = (30, 60, 80)
    warmup_epochs: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, optimiser, loop and checkpoint settings."""

    data: str = ""
    run_dir: str = "runs/alexnet"
    epochs: int = 90
    batch_size: int = 128  # global: divided evenly across ranks
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    channels_last: bool | None = None  # None: on for GPU, off for CPU
    compile: bool = False
    model_parallel: bool = False
    keep_checkpoints: int = 3
    log_every: int = 10  # steps between metric lines
    max_steps_per_epoch: int = 0  # 0: the whole epoch (smoke tests use a few steps)
    deterministic: bool = False
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0: only at epoch ends
    threads: int = 0  # torch intra-op threads per rank; 0: torch's default
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


def from_dict(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a nested dict; unknown keys raise ConfigError naming them."""
    known = {f.name: f for f in fields(cls)}
    values = {k: v for k, v in values.items() if (cls.__name__, k) not in RETIRED_KEYS}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name) if _has_defaults(cls) else None
        if is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = from_dict(type(default), value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _has_defaults(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in fields(cls)
    )


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
                   flags: dict[str, Any] | None = None,
                   base: dict[str, Any] | None = None) -> TrainConfig:
    """defaults (or `base`, e.g. a checkpoint's config) < config file < --set < named flags."""
    values = base if base is not None else to_dict(TrainConfig())
    if config_file:
        values = merge(values, load_config_file(config_file))
    for item in sets:
        values = merge(values, parse_set(item))
    for name, value in (flags or {}).items():
        if value is not None:
            values = merge(values, _nested(FLAG_KEYS[name], value))
    if data is not None:
        values["data"] = str(data)
    return from_dict(TrainConfig, values, where=config_file or "config")
