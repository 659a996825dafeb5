"""CLI commands of the train stage: `train`, `eval`, `figures`, `bench train`.

Configs are resolved in one place, `config.resolve_config`: defaults < TOML/JSON file < --set
key=value < named flags (unknown keys are errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from alexnet_dali.config import resolve_config
from alexnet_dali.errors import report_user_errors
from alexnet_dali.figures import figures_command  # matplotlib is imported inside the command


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
@report_user_errors
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

    state = None
    if resume:  # bare --resume: the newest checkpoint of --run-dir (or the config's run_dir)
        run_dir = flags.get("run_dir") or resolve_config(data, config_file=config_file,
                                                         sets=sets).run_dir
        state = ckpt_io.load_checkpoint(run_dir if resume == "latest" else resume)
    base = state["config"] if state and not config_file else None
    cfg = resolve_config(data, config_file=config_file, sets=sets, flags=flags, base=base,
                         base_name=f"{state['path']}:config" if base else "")
    summary = train(cfg, resume=state, allow_mismatch=allow_mismatch)
    if summary["signal"]:
        click.echo(f"stopped by {summary['signal']}; resume with --resume", err=True)


@click.command(
    "eval", short_help="Top-1/top-5 error of a checkpoint on the val split (center or ten-crop).")
@click.argument("data")
@click.option("--checkpoint", "ckpt", required=True, help="ckpt-*.pt file or a run dir (newest).")
@click.option("--tencrop", is_flag=True, help="Average the softmax of the 10 views.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results here.")
@click.option("--split", default="val", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Per rank.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="DALI CPU threads per rank.")
@report_user_errors
def eval_command(data: str, ckpt: str, tencrop: bool, json_path: str | None, split: str,
                 batch_size: int, device: str, workers: int | None) -> None:
    """Top-1/top-5 error of a checkpoint over the whole split of DATA (center or ten-crop).

    \b
    Examples:
      alexnet-dali eval demo/shards --checkpoint runs/demo --tencrop --json runs/demo/eval.json
      torchrun --nproc-per-node 2 $(which alexnet-dali) eval shards/ --checkpoint CKPT
    \b
    The model is rebuilt from the checkpoint's own config; each sample is counted once.
    """
    from alexnet_dali.evaluation import evaluate_checkpoint

    evaluate_checkpoint(data, ckpt, tencrop=tencrop, json_path=json_path, split=split,
                        batch_size=batch_size, device=device, workers=workers)


@click.command(
    "train", short_help="Training images/s: synthetic input vs fed by DALI, and the ratio.")
@click.argument("data", required=False)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed steps per source.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="DALI CPU threads.")
@click.option("--threads", type=click.IntRange(min=0), default=0,
              help="torch CPU threads (0: default).")
@click.option("--compile", is_flag=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@report_user_errors
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

    result = run_bench(data, **options)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")


COMMANDS: list = [train_command, eval_command, figures_command]
BENCH_COMMANDS: list = [bench_train_command]
