"""CLI command `doctor`: the environment report and the CPU/GPU checks (`doctor/`)."""

from __future__ import annotations

import os
import sys

import click

from alexnet_dali.errors import report_user_errors


@click.command("doctor", short_help="Check this machine end to end; a Markdown report.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the Markdown report here.")
@click.option("--quick", is_flag=True, help="Smaller data; skip the slow checks (throughput).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="DALI CPU threads (default: the CPUs this process may use, at most 8).")
@report_user_errors
def doctor_command(out: str | None, quick: bool, threads: int | None) -> None:
    """Report Python, torch, DALI, driver, GPUs, CPUs and extras, then run the checks.

    \b
    Each check prints one line: PASS, FAIL or SKIP with the reason. They run on data generated
    in a temporary folder. CPU checks always run; GPU checks (mixed decoding vs the CPU graphs,
    bf16 + channels_last, model parallel, NCCL, throughput) need CUDA and are skipped, by name,
    without it. Exit status 0 when nothing failed, 1 otherwise.
    \b
    Examples:
      alexnet-dali doctor --quick
      alexnet-dali doctor --out doctor.md     # then paste doctor.md into an issue
    """
    from alexnet_dali.doctor.runner import run_doctor
    from alexnet_dali.doctor.cpu import CPU_CHECKS
    from alexnet_dali.doctor.gpu import GPU_CHECKS

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    command = "alexnet-dali doctor" + " --quick" * quick
    status = run_doctor(CPU_CHECKS + GPU_CHECKS, out=out, quick=quick,
                        threads=threads or min(8, usable or 1), echo=click.echo, command=command)
    sys.exit(status)


COMMANDS: list = [doctor_command]
