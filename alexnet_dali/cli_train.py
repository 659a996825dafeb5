"""CLI commands of the train stage: `train`, `eval`, `figures`, `bench train`.

Config resolution happens in one place, `resolve_config`: defaults < TOML/JSON file < --set
key=value < named flags, built through `config.from_dict` (unknown keys are errors).
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from alexnet_dali.config import ConfigError, TrainConfig, from_dict, load_toml, merge, to_dict
from alexnet_dali.figures import figures_command  # matplotlib is imported inside the command

# named flag -> dotted config key
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


def _fail(e: Exception) -> None:
    """Print a user-fixable error (ConfigError, the data dir's ValueErrors, ...) and exit 2."""
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


@click.command("train")
@click.argument("data")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set model.lrn=false (repeatable).")
@click.option("--run-dir", help="Where checkpoints, metrics.jsonl and config.json go.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int, help="Global batch, divided evenly across ranks.")
@click.option("--lr", type=float)
@click.option("--seed", type=int)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]))
@click.option("--compile/--no-compile", default=None, help="torch.compile the model.")
@click.option("--model-parallel/--no-model-parallel", default=None,
              help="Tower 1 and tower 2 on two devices.")
@click.option("--max-steps-per-epoch", type=int, help="Truncate epochs (smoke runs).")
@click.option("--threads", type=int, help="torch CPU threads per rank.")
@click.option("--workers", type=int, help="DALI CPU threads per rank.")
@click.option("--arch", type=click.Choice(["paper", "owt"]))
@click.option("--init", type=click.Choice(["paper", "he"]))
@click.option("--update", type=click.Choice(["pytorch", "paper"]), help="SGD momentum rule.")
@click.option("--schedule", type=click.Choice(["plateau", "step", "constant"]))
@click.option("--checkpoint-every", type=int, help="Steps between mid-epoch checkpoints.")
@click.option("--keep-checkpoints", type=int)
@click.option("--log-every", type=int)
@click.option("--deterministic/--no-deterministic", default=None)
@click.option("--pca-noise/--no-pca-noise", default=None)
@click.option("--std-normalize/--no-std-normalize", default=None,
              help="Divide inputs by the channel std (short-run recipe).")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[CKPT]",
              help="Continue from CKPT, or (bare --resume) from the run dir's newest checkpoint.")
@click.option("--allow-mismatch", is_flag=True,
              help="Resume even if world size, batch size or dataset changed.")
def train_command(data: str, config_file: str | None, sets: tuple[str, ...],
                  resume: str | None, allow_mismatch: bool, **flags: Any) -> None:
    """Train AlexNet on preprocessed shards DATA (or `synthetic`).

    \b
    Examples:
      alexnet-dali train demo/shards --config configs/demo.toml --run-dir runs/demo
      alexnet-dali train shards/ --epochs 90 --run-dir runs/paper --set model.lrn=false
      alexnet-dali train shards/ --run-dir runs/paper --resume
      torchrun --nproc-per-node 2 $(which alexnet-dali) train shards/ --run-dir runs/ddp
    \b
    Precedence: defaults < --config file < --set < named flags. With --resume and no
    --config, the checkpoint's own config is the base. The resolved config is written to
    RUN/config.json. SIGTERM/SIGINT save a checkpoint at the next step and exit.
    """
    from alexnet_dali import checkpoint as ckpt_io
    from alexnet_dali.trainer import train

    try:
        state = None
        if resume:  # bare --resume: the newest checkpoint of --run-dir (or the config's run_dir)
            run_dir = flags.get("run_dir") or resolve_config(data, config_file=config_file,
                                                             sets=sets).run_dir
            state = ckpt_io.load_checkpoint(run_dir if resume == "latest" else resume)
        base = state["config"] if state and not config_file else None
        cfg = resolve_config(data, config_file=config_file, sets=sets, flags=flags, base=base)
        summary = train(cfg, resume=state, allow_mismatch=allow_mismatch)
    except (ValueError, ckpt_io.CheckpointError, RuntimeError) as e:  # ConfigError too
        _fail(e)
    if summary["signal"]:
        click.echo(f"stopped by {summary['signal']}; resume with --resume", err=True)


@click.command(
    "eval", short_help="Top-1/top-5 error of a checkpoint on the val split (center or ten-crop).")
@click.argument("data")
@click.option("--checkpoint", "ckpt", required=True, help="ckpt-*.pt file or a run dir (newest).")
@click.option("--tencrop", is_flag=True, help="Average the softmax of the 10 views.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results here.")
@click.option("--split", default="val", show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Per rank.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--workers", type=int, default=None, help="DALI CPU threads per rank.")
@click.option("--per-class", is_flag=True,
              help="Also accuracy and samples per class (names), worst first; in --json too.")
def eval_command(data: str, ckpt: str, tencrop: bool, json_path: str | None, split: str,
                 batch_size: int, device: str, workers: int | None, per_class: bool) -> None:
    """Top-1/top-5 error of a checkpoint over the whole split of DATA (center or ten-crop).

    \b
    Examples:
      alexnet-dali eval demo/shards --checkpoint runs/demo --tencrop --json runs/demo/eval.json
      torchrun --nproc-per-node 2 $(which alexnet-dali) eval shards/ --checkpoint CKPT
    \b
    The model is rebuilt from the checkpoint's own config; each sample is counted once.
    """
    from alexnet_dali.checkpoint import CheckpointError
    from alexnet_dali.evaluation import evaluate_checkpoint

    try:
        evaluate_checkpoint(data, ckpt, tencrop=tencrop, json_path=json_path, split=split,
                            batch_size=batch_size, device=device, workers=workers,
                            per_class=per_class)
    except (ValueError, CheckpointError, RuntimeError) as e:  # ConfigError too
        _fail(e)


@click.command(
    "train", short_help="Training images/s: synthetic input vs fed by DALI, and the ratio.")
@click.argument("data", required=False)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--steps", type=int, default=10, show_default=True, help="Timed steps per source.")
@click.option("--warmup", type=int, default=2, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True)
@click.option("--workers", type=int, default=None, help="DALI CPU threads.")
@click.option("--threads", type=int, default=0, help="torch CPU threads (0: default).")
@click.option("--compile", is_flag=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def bench_train_command(data: str | None, json_path: str | None, **options: Any) -> None:
    """Training images/s on synthetic input vs fed by the DALI pipeline from DATA, and the ratio.

    \b
    Example:
      alexnet-dali bench train demo/shards --batch-size 32 --steps 10
    \b
    A ratio (DALI / synthetic) well below 1 means the pipeline starves the model.
    Without DATA only the synthetic number is measured.
    """
    from alexnet_dali.bench_train import run_bench

    try:
        result = run_bench(data, **options)
    except (ValueError, RuntimeError) as e:  # ConfigError too
        _fail(e)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")


COMMANDS: list = [train_command, eval_command, figures_command]
BENCH_COMMANDS: list = [bench_train_command]
