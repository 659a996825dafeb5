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
@click.option("--config", "config_file", multiple=True, metavar="FILE|NAME",
              help="Train configs to start from, layered as train layers them (e.g. paper: the "
              "built-in paper.toml); the options above override them.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any other config value, as train takes it (e.g. optim.update=paper).")
@report_user_errors
def bench_init_command(data: str, inits: str, steps: int, batch_size: int, lr: float,
                       threads: int, seed: int, config_file: tuple[str, ...],
                       sets: tuple[str, ...]) -> None:
    """How each init carries DATA's images through AlexNet, and its first SGD steps.

    Per layer at init: the mean, std, signal (how much the output varies with the image) and
    dead units; fc7's image-independent part and the largest lr stable along the class-shift
    direction; then the first steps' loss, accuracy and relative weight updates. docs/TRAINING.md
    ("Why the paper's recipe stalls") reads these tables.

    \b
    Example (the demo's shards; 50 steps of each init, ~2 min a init on 2 CPU cores):
      alexnet-dali bench init demo/shards --config paper --steps 50
    """
    from alexnet_dali.bench.init import run_bench

    names = tuple(name.strip() for name in inits.split(",") if name.strip())
    unknown = [name for name in names if name not in INITS]
    if unknown or not names:
        raise click.BadParameter(f"{unknown or inits!r}: choose from {', '.join(INITS)}",
                                 param_hint="--inits")
    run_bench(data, inits=names, steps=steps, batch_size=batch_size, lr=lr, threads=threads,
              seed=seed, config_file=config_file, sets=sets)


@click.command("learn", short_help="Does a recipe learn? Recipes side by side on generated "
               "data harder than the demo's.")
@click.option("--workdir", type=click.Path(file_okay=False), default="/tmp/alexnet-dali-learn",
              show_default=True, help="Where the data (kept while its settings stay) and runs go.")
@click.option("--recipes", default="paper,paper+short-run", show_default=True,
              help="Comma-separated recipes; each is built-in recipe names or TOML files joined "
              "by '+', layered in order (paper+short-run: paper.toml, then short-run.toml).")
@click.option("--classes", type=click.IntRange(min=2), default=16, show_default=True,
              help="Classes of the generated data (16 shapes; more repeat them).")
@click.option("--train-per-class", type=click.IntRange(min=1), default=80, show_default=True,
              help="Train images per class.")
@click.option("--val-per-class", type=click.IntRange(min=1), default=20, show_default=True,
              help="Val images per class.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Epochs per recipe.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per step (global).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads; 0: torch's default.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Data, weights, order and augmentation.")
@click.option("--linear/--no-linear", default=True, show_default=True,
              help="Measure the linear model on the raw pixels first (how hard the data is).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the numbers to this JSON file.")
@report_user_errors
def bench_learn_command(workdir: str, recipes: str, classes: int, train_per_class: int,
                        val_per_class: int, epochs: int, batch_size: int, threads: int,
                        seed: int, linear: bool, json_path: str | None) -> None:
    """Train the paper's network with each recipe on the same generated data, harder than the
    demo's, and print the val top-1 error after every epoch side by side, with chance and a
    linear model on the raw pixels for scale.

    The data (`sample-data --kind hard`): 16 shapes whose colour, rotation, scale and place are
    drawn independently of the class, preprocessed once into WORKDIR.

    \b
    Example (the paper's recipe vs with the short-run switches; see docs/TRAINING.md):
      alexnet-dali bench learn --recipes paper,paper+short-run --epochs 10
    """
    import json
    from pathlib import Path

    from alexnet_dali.bench.learn import LearnData, load_recipes, run_bench

    data = LearnData(classes=classes, train_per_class=train_per_class,
                     val_per_class=val_per_class, seed=seed)
    result = run_bench(workdir, load_recipes(recipes), data, epochs=epochs,
                       batch_size=batch_size, threads=threads, linear=linear, log=click.echo)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")


BENCH_COMMANDS += [bench_init_command, bench_learn_command]
