"""The one place that builds a TrainConfig: from defaults (or a checkpoint's config), TOML or
JSON files, --set key=value and named flags; and the run's saved config.json.

`resolve_config`: defaults (or a checkpoint's config) < TOML/JSON files (each over the one before;
a name without a path is a built-in recipe: paper, short-run, demo) < --set key=value < named
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
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from alexnet_dali.config.fields import Source, build, convert_tree, flag_keys
from alexnet_dali.config.rules import check_rules
from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.errors import ConfigError

T = TypeVar("T")

# Keys older versions wrote into config.json and checkpoints, dropped when read again:
# (dataclass, key) -> why it is gone.
RETIRED_KEYS = {
    ("LoaderConfig", "batch_size"): "the per-rank batch is derived from the global batch_size",
}


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

# named flag -> dotted config key, from the fields declared with a flag (config/schema.py)
FLAG_KEYS = flag_keys(TrainConfig)


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


RECIPES = "alexnet_dali.configs"  # the recipes shipped with the package (the repository's configs/)


def recipe_names() -> list[str]:
    """The built-in recipes `--config NAME` takes: paper, short-run, demo."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files(RECIPES).iterdir()
                  if p.name.endswith(".toml"))


def find_config_file(name: str | Path) -> Path:
    """A config file's path: `name` itself when it is a file or looks like a path, else the
    built-in recipe of that name (`paper` -> configs/paper.toml in the package), also when a
    folder of that name is in the way (`demo/`, which `make demo` writes)."""
    path = Path(name)
    a_path = bool(path.suffix) or len(path.parts) > 1 or str(name).endswith("/")
    if path.is_dir() and a_path:
        raise ConfigError(f"{name}: a folder, not a config file (give a TOML file, a run's "
                          "config.json or a built-in recipe's name)")
    if path.is_file() or a_path:
        return path
    recipe = resources.files(RECIPES) / f"{name}.toml"
    if not recipe.is_file():
        raise ConfigError(f"{name}: no such config file, nor a built-in recipe (those are "
                          f"{', '.join(recipe_names())})")
    return Path(str(recipe))


def load_config_file(name: str | Path) -> dict[str, Any]:
    """A TOML config (a path or a built-in recipe's name), or a run's saved config.json."""
    return read_config_file(find_config_file(name))


def read_config_file(path: Path) -> dict[str, Any]:
    """The values of a config file found by `find_config_file`."""
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
    return load_toml(path)


def resolve_config(data: str | None, *, config_file: str | Sequence[str] | None = None,
                   sets: tuple[str, ...] = (), flags: dict[str, Any] | None = None,
                   base: dict[str, Any] | None = None,
                   base_name: str = "checkpoint config") -> TrainConfig:
    """defaults (or `base`, e.g. a checkpoint's config) < config files, each over the one
    before (`--config paper --config short-run`) < --set < named flags.

    Each source is converted and checked on its own (its errors name it), then the merged config
    against `RULES`.
    """
    dropped = frozenset(RETIRED_KEYS)
    layers = [] if base is None else [(base, Source("other", base_name))]
    files = (config_file,) if isinstance(config_file, (str, Path)) else tuple(config_file or ())
    for path in map(find_config_file, files):
        layers.append((read_config_file(path), Source("file", str(path))))
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
