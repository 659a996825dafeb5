"""`alexnet-dali doctor`: what this machine has, and checks that prove each stage works on it.

The runner: the `Check` / `Result` types, the generated data, running the checks and the
Markdown report. The report is Markdown a user can paste into an issue on the project's tracker:
the environment (`env.py`), then one `PASS` / `FAIL` / `SKIP` line per check with its reason,
then the numbers measured. The checks run on data generated in a temporary folder (sample-data
-> preprocess -> pca-stats): the CPU ones everywhere (`cpu.CPU_CHECKS`), the GPU ones where CUDA
is present (`gpu.GPU_CHECKS`; otherwise each is a SKIP naming what is missing); the CLI passes
both.
A check fails by raising (the message is its reason), skips by raising `Skip`. Exit status 0
when nothing failed.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable


class Skip(Exception):
    """A check that cannot run here (no CUDA device, --quick, ...); the message says why."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One check: `run(ctx)` returns the PASS detail, raises `Skip`, or raises (FAIL)."""

    name: str
    run: Callable[["Context"], str]
    gpus: int = 0  # CUDA devices it needs
    slow: bool = False  # skipped with --quick


@dataclasses.dataclass
class Result:
    """The outcome of one check."""

    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        """`PASS name: detail (1.2 s)` (one line)."""
        timing = f" ({self.seconds:.1f} s)" if self.status != "SKIP" else ""
        return f"{self.status} {self.name}: {' '.join(self.detail.split())}{timing}"


@dataclasses.dataclass
class Context:
    """What the checks share: a work folder, generated data (made once), measured numbers."""

    workdir: Path
    quick: bool
    threads: int = 2
    numbers: dict[str, float] = dataclasses.field(default_factory=dict)
    data_dir: Path | None = None  # None: generated on first use

    def data(self) -> Path:
        """The shard folder: made here from generated images (sample-data, preprocess,
        pca-stats) on first use."""
        if self.data_dir is None:
            self.data_dir = make_data(self.workdir / "data", 8 if self.quick else 32)
        return self.data_dir


CLASSES = 4  # of the generated data


def make_data(root: Path, images_per_class: int) -> Path:
    """sample-data -> preprocess -> pca-stats (mean image too) under `root`; the shard folder."""
    from alexnet_dali.tools.pca import pca_stats
    from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess
    from alexnet_dali.tools.sample_data import SampleDataConfig, write_sample_data

    raw, shards = root / "raw", root / "shards"
    write_sample_data(raw, SampleDataConfig(classes=CLASSES, train_per_class=images_per_class,
                                            val_per_class=4, min_side=160, max_side=400))
    preprocess(raw, shards, PreprocessConfig(shard_size=64, workers=1), progress=False)
    pca_stats(shards, workers=1, mean_image=True, progress=False)
    return shards


def cuda_devices() -> int:
    """CUDA devices torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_check(check: Check, ctx: Context, gpus: int) -> Result:
    """Run one check and turn its outcome into a Result (never raises, bar KeyboardInterrupt)."""
    if check.gpus and gpus < check.gpus:
        have = "no CUDA device" if gpus == 0 else f"{gpus} CUDA device(s)"
        needs = "" if check.gpus == 1 else f"; needs {check.gpus}"
        return Result(check.name, "SKIP", have + needs)
    if check.slow and ctx.quick:
        return Result(check.name, "SKIP", "--quick")
    start = time.perf_counter()
    try:
        detail, status = check.run(ctx), "PASS"
    except Skip as e:
        detail, status = str(e), "SKIP"
    except Exception as e:  # noqa: BLE001 - any error is this check's FAIL, the others go on
        where = traceback.extract_tb(e.__traceback__)[-1]
        detail = f"{type(e).__name__}: {e} [{Path(where.filename).name}:{where.lineno}]"
        status = "FAIL"
    return Result(check.name, status, detail, time.perf_counter() - start)


def run_checks(checks: list[Check], ctx: Context, echo: Callable[[str], Any] = print,
               ) -> list[Result]:
    """Every check in order, echoing each result line as it completes."""
    gpus = cuda_devices()
    results = []
    for check in checks:
        result = run_check(check, ctx, gpus)
        echo(result.line())
        results.append(result)
    return results


def render_report(environment: list[tuple[str, str]], results: list[Result],
                  numbers: dict[str, float], command: str) -> str:
    """The Markdown report: environment table, check lines, measured numbers."""
    failed = sum(r.status == "FAIL" for r in results)
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    lines = ["# alexnet-dali doctor", "", f"`{command}`: "
             + ", ".join(f"{n} {s}" for s, n in counts.items())
             + (" — **failed**" if failed else " — nothing failed"), "",
             "## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in environment]
    lines += ["", "## Checks", "", "```"] + [r.line() for r in results] + ["```"]
    if numbers:
        lines += ["", "## Measured", "", "| what | value |", "|---|---:|"]
        lines += [f"| {key} | {value:,.2f} |" for key, value in numbers.items()]
    return "\n".join(lines) + "\n"


def run_doctor(checks: list[Check], *, out: str | Path | None = None, quick: bool = False,
               threads: int = 2, echo: Callable[[str], Any] = print,
               command: str = "alexnet-dali doctor") -> int:
    """Report the environment, run the checks, write the report to `out`; the exit status."""
    from alexnet_dali.doctor.env import environment

    env = environment()
    for key, value in env:
        echo(f"{key}: {value}")
    with tempfile.TemporaryDirectory(prefix="alexnet-dali-doctor-") as tmp:
        ctx = Context(workdir=Path(tmp), quick=quick, threads=threads)
        results = run_checks(checks, ctx, echo)
    report = render_report(env, results, ctx.numbers, command)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(report)
        echo(f"report written to {out}: to report a problem, open an issue on the project's "
             "issue tracker (the repository you installed it from) and paste the report there, "
             "with the command that failed and its output (README: Reporting a problem)")
    return 1 if any(r.status == "FAIL" for r in results) else 0
