"""CLI command of the train stage: `train`.

Configs are resolved in one place, `config/resolve.py`: defaults < TOML/JSON file < --set
key=value < named flags (unknown keys are errors). train's flags, their config keys, types and
choices come from the config's declarations (config/schema.py).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from alexnet_dali.config.fields import choices, field_type
from alexnet_dali.config.resolve import FLAG_KEYS, resolve_config
from alexnet_dali.config.schema import ARCHITECTURES, TrainConfig
from alexnet_dali.errors import report_user_errors, signal_exit_status


def config_default(key: str) -> str:
    """The default of config key `key` (dotted) as --help shows it."""
    value: Any = TrainConfig()
    for part in key.split("."):
        value = getattr(value, part)
    if isinstance(value, bool):
        return ("" if value else "no-") + key.split(".")[-1].replace("_", "-")
    return str(value)


class ConfigOption(click.Option):
    """A `train` flag for config key `config_key`. Its default is None, so that only a flag
    given on the command line overrides --config, --set and --resume; --help shows the config's
    default instead."""

    def __init__(self, *args: Any, config_key: str, **kwargs: Any) -> None:
        super().__init__(*args, default=None, **kwargs)
        self.config_key = config_key

    def get_help_extra(self, ctx: click.Context) -> Any:
        """click's help extras, with the config's default."""
        return {**super().get_help_extra(ctx), "default": config_default(self.config_key)}


def train_option(*decls: str, **kwargs: Any) -> Callable:
    """A `train` flag (a `ConfigOption`): its config key, type and choices come from the field
    declared with this flag (config/schema.py); only the spelling and the help are given here."""
    key = FLAG_KEYS[decls[0].split("/")[0].lstrip("-").replace("-", "_")]
    if "/" not in decls[0] and "flag_value" not in kwargs:  # a value, not an on/off flag
        names = choices(TrainConfig, key)
        kwargs["type"] = click.Choice([str(c) for c in names]) if names else field_type(
            TrainConfig, key)
    return click.option(*decls, cls=ConfigOption, config_key=key, **kwargs)


def described(table: dict[str, Any]) -> str:
    """`name: summary; ...` for the rows of a table of variants (--help)."""
    return "; ".join(f"{name}: {row.summary}" for name, row in table.items()) + "."


@click.command("train")
@click.argument("data")
@click.option("--config", "config_file", multiple=True, metavar="FILE|NAME",
              help="TOML recipe or a run's config.json; a bare NAME is a built-in recipe (paper, "
              "short-run, demo). Repeatable: each over the one before.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set model.dropout=0 (repeatable).")
@train_option("--run-dir", help="Where checkpoints, metrics.jsonl, config.json go.")
@train_option("--epochs", help="Epochs to train.")
@train_option("--batch-size",
              help="Global batch: images per step, all ranks together (divided evenly).")
@train_option("--lr", help="Initial learning rate.")
@train_option("--seed", help="Seed of the init, data order, augmentation.")
@train_option("--device", help="auto: cuda when available, else cpu.")
@train_option("--precision", help="auto: bf16 autocast on a GPU, fp32 on a CPU.")
@train_option("--compile/--no-compile", help="torch.compile the model (slow start, faster steps).")
@train_option("--model-parallel/--no-model-parallel",
              help="Tower 1 and tower 2 on two GPUs; on a CPU both on the CPU (testing).")
@train_option("--max-steps-per-epoch", help="Cut every epoch to this many steps; 0: whole epochs.")
@train_option("--threads", help="torch CPU threads per rank; 0: torch's.")
@train_option("--workers", help="DALI CPU threads per rank.")
@train_option("--arch", help=described(ARCHITECTURES))
@train_option("--init", help="code: the authors' code (N(0, 0.01), 0.03 on conv3-5; some biases "
              "1); paper: N(0, 0.01) as the text prints it; caffe: bvlc_alexnet's (fc6/7 0.005, "
              "biases 0.1 for 1); he: Kaiming normal, zero biases.")
@train_option("--update",
              help="SGD momentum rule: torch.optim.SGD's or the paper's (docs/TRAINING.md).")
@train_option("--schedule",
              help="lr / 10 when val error stalls (paper), at optim.step_epochs, or never.")
@train_option("--checkpoint-every",
              help="Steps between mid-epoch checkpoints; 0: at epoch ends only.")
@train_option("--keep-checkpoints", help="How many of the newest checkpoints to keep.")
@train_option("--log-every", help="Steps between metric lines.")
@train_option("--deterministic/--no-deterministic",
              help="Deterministic torch kernels (bitwise resume; slower on GPU).")
@train_option("--pca-noise/--no-pca-noise", help="The paper's PCA colour noise.")
@train_option("--std-normalize/--no-std-normalize",
              help="Divide inputs by the channel std too (short runs; not the paper).")
@train_option("--skip-bad-samples", flag_value="skip",
              help="Leave damaged samples out (counted) instead of stopping (loader.shard_check).")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[CKPT]",
              show_default="a new run",
              help="Continue from CKPT, or (bare --resume) from the run dir's newest checkpoint.")
@click.option("--allow-mismatch", is_flag=True,
              help="Resume even if world size, batch size or dataset changed.")
@report_user_errors
def train_command(data: str, config_file: tuple[str, ...], sets: tuple[str, ...],
                  resume: str | None, allow_mismatch: bool, **flags: Any) -> None:
    """Train AlexNet on preprocessed shards DATA (or `synthetic`).

    \b
    Examples:
      alexnet-dali train shards/ --config paper --run-dir runs/paper
      alexnet-dali train demo/shards --config paper --config short-run --config demo \\
          --run-dir runs/demo
      alexnet-dali train shards/ --run-dir runs/nolrn --set model.lrn=false
      alexnet-dali train shards/ --run-dir runs/paper --resume
      torchrun --nproc-per-node 2 $(which alexnet-dali) train shards/ --run-dir runs/ddp
    \b
    Precedence: defaults < --config files, in order < --set < named flags (the defaults shown
    are the config's). With --resume and no --config, the checkpoint's own config is the base. The
    resolved config is written to RUN/config.json.
    \b
    Exit status: 0 when training finished (or the resumed run was already complete);
    2 on an input error (also a damaged sample, having saved a checkpoint); 3 when the loss or
    the weights became non-finite (nothing non-finite is saved: lower the lr and --resume from
    the last good checkpoint the message names); 130 after Ctrl-C (SIGINT) and 143 after
    SIGTERM, each having saved a checkpoint at the next step: run the same command with
    --resume to continue.
    """
    from alexnet_dali.model import checkpoint as ckpt_io
    from alexnet_dali.loader.data import require_data
    from alexnet_dali.train.loop import train

    state = None
    if resume:  # bare --resume: the newest checkpoint of --run-dir (or the config's run_dir)
        run_dir = flags.get("run_dir") or resolve_config(data, config_file=config_file,
                                                         sets=sets).run_dir
        state = ckpt_io.load_checkpoint(run_dir if resume == "latest" else resume)
    base = state["config"] if state and not config_file else None
    cfg = resolve_config(data, config_file=config_file, sets=sets, flags=flags, base=base,
                         base_name=f"{state['path']}:config" if base else "")
    require_data(data, "train")  # after the config's checks, which read no data
    summary = train(cfg, resume=state, allow_mismatch=allow_mismatch)
    if summary["signal"]:  # a checkpoint was saved; say so to scripts (a requeue tests it)
        sys.exit(signal_exit_status(summary["signal"]))


COMMANDS: list = [train_command]
