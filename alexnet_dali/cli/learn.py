"""The `bench` commands that measure learning, not speed: `bench init` (bench/init.py) and
`bench learn` (bench/learn.py)."""

from __future__ import annotations

import click

from alexnet_dali.errors import report_user_errors

BENCH_COMMANDS: list = []
INITS = ("code", "paper", "caffe", "he")


@click.command("init", short_help="Each init's activation scales and first SGD steps on DATA.")
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--inits", default="code,paper,caffe", show_default=True,
              help=f"Comma-separated model.init values, side by side ({', '.join(INITS)}).")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True,
              help="SGD steps after init, every init on the same batches.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.01,
              show_default=True, help="The weights' learning rate (the paper's 0.01).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads; 0: torch's default.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Weights, dropout and batches.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A train config (TOML) to start from, e.g. configs/paper.toml; the options "
              "above override it.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any other config value, as train takes it (e.g. optim.update=paper).")
@report_user_errors
def bench_init_command(data: str, inits: str, steps: int, batch_size: int, lr: float,
                       threads: int, seed: int, config_file: str | None,
                       sets: tuple[str, ...]) -> None:
    """How each init carries DATA's images through AlexNet, and its first SGD steps.

    Per layer at init: the mean, std, signal (how much the output varies with the image) and
    dead units; fc7's image-independent part and the largest lr stable along the class-shift
    direction; then the first steps' loss, accuracy and relative weight updates. docs/TRAINING.md
    ("Why the paper's recipe stalls") reads these tables.

    \b
    Example (the demo's shards; 50 steps of each init, ~2 min a init on 2 CPU cores):
      alexnet-dali bench init demo/shards --config configs/paper.toml --steps 50
    """
    from alexnet_dali.bench.init import run_bench

    names = tuple(name.strip() for name in inits.split(",") if name.strip())
    unknown = [name for name in names if name not in INITS]
    if unknown or not names:
        raise click.BadParameter(f"{unknown or inits!r}: choose from {', '.join(INITS)}",
                                 param_hint="--inits")
    run_bench(data, inits=names, steps=steps, batch_size=batch_size, lr=lr, threads=threads,
              seed=seed, config_file=config_file, sets=sets)


BENCH_COMMANDS.append(bench_init_command)
