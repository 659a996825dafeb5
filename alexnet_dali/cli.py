"""The `alexnet-dali` command line: one group, commands contributed by each stage's cli module.

Heavy imports (torch, DALI) happen inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import click

from alexnet_dali import __version__, cli_data, cli_pipeline, cli_train, cli_use


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="alexnet-dali")
def main() -> None:
    """AlexNet (Krizhevsky et al. 2012) reproduced on an NVIDIA DALI pipeline and PyTorch.

    \b
    Flow: sample-data -> preprocess -> pca-stats -> train -> eval --tencrop
    Use: predict, export, import-weights torchvision
    """


@main.group()
def bench() -> None:
    """Benchmarks that print measurements (preprocess, pipeline, train)."""


for module in (cli_data, cli_pipeline, cli_train, cli_use):
    for command in module.COMMANDS:
        main.add_command(command)
    for command in module.BENCH_COMMANDS:
        bench.add_command(command)


if __name__ == "__main__":
    main()
