"""The `alexnet-dali` command line: one group; each stage's commands in a module of their own
(`data`, `train`, `use`, `doctor`: their COMMANDS), the benchmarks in the `bench` group
(`bench.py`), all registered below.

Heavy imports (torch, DALI) happen inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import click

from alexnet_dali import __version__
from alexnet_dali.cli import bench, data, doctor, learn, train, use
from alexnet_dali.errors import DEBUG_ENV, DEBUG_META


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="alexnet-dali")
@click.option("--debug", is_flag=True,
              help=f"Show the traceback of user errors too (or set {DEBUG_ENV}=1).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """AlexNet (Krizhevsky et al. 2012) reproduced on an NVIDIA DALI pipeline and PyTorch.

    \b
    Flow: sample-data -> preprocess -> pca-stats -> train -> eval --tencrop
    Use: predict, export, import-weights torchvision
    A mistake in the input (config, data, checkpoint) ends with one `error:` line, exit 2;
    Ctrl-C exits 130 (train first saves a checkpoint; SIGTERM: 143). Every command: CMD --help.
    """
    ctx.meta[DEBUG_META] = debug


for module in (data, train, use, doctor):
    for command in module.COMMANDS:
        main.add_command(command)
for command in learn.BENCH_COMMANDS:
    bench.bench.add_command(command)
main.add_command(bench.bench)
