"""One way to report errors: user errors are one `error:` line and exit 2; bugs keep their
traceback; `--debug` / ALEXNET_DALI_DEBUG=1 show the traceback of user errors too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from alexnet_dali.cli import main
from alexnet_dali.errors import (CheckpointError, ConfigError, CorruptSampleError, DataError,
                                 UserError)


def commands(group: click.Group) -> list[click.Command]:
    out = []
    for command in group.commands.values():
        out += commands(command) if isinstance(command, click.Group) else [command]
    return out


def test_every_command_reports_user_errors_the_one_way():
    undecorated = [c.name for c in commands(main)
                   if not getattr(c.callback, "reports_user_errors", False)]
    assert not undecorated, f"commands without @report_user_errors: {undecorated}"


def test_the_project_errors_are_one_family():
    for error in (ConfigError, DataError, CheckpointError, CorruptSampleError):
        assert issubclass(error, UserError) and not issubclass(error, (ValueError, RuntimeError))


def run_cli(*args: str, env: dict[str, str] | None = None,
            code: str = "") -> subprocess.CompletedProcess:
    """`alexnet-dali ARGS` in a fresh interpreter; `code` runs first (e.g. to plant a bug)."""
    script = f"{code}\nfrom alexnet_dali.cli import main\nmain()"
    environ = {k: v for k, v in os.environ.items() if k != "ALEXNET_DALI_DEBUG"}
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env={**environ, **(env or {})}, timeout=120)


def test_a_user_error_is_one_line_and_exit_2(tmp_path: Path):
    done = run_cli("pca-stats", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {tmp_path}/manifest.json: not found; run `alexnet-dali preprocess SRC "
        f"{tmp_path}` first"]


def test_a_bug_shows_its_traceback(tmp_path: Path):
    plant = ("import alexnet_dali.tools.pca as pca\n"
             "def broken(*args, **kwargs):\n"
             "    raise RuntimeError('a genuine bug')\n"
             "pca.pca_stats = broken")
    done = run_cli("pca-stats", str(tmp_path), code=plant)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "RuntimeError: a genuine bug" in done.stderr and "error:" not in done.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_a_user_error(tmp_path: Path, how: str):
    if how == "flag":
        done = run_cli("--debug", "pca-stats", str(tmp_path))
    else:
        done = run_cli("pca-stats", str(tmp_path), env={"ALEXNET_DALI_DEBUG": "1"})
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "alexnet_dali.errors.DataError: " in done.stderr and "manifest.json" in done.stderr


def test_workers_started_under_the_block_never_see_ctrl_c():
    """A terminal's Ctrl-C reaches every process of the group; workers started inside
    ctrl_c_blocked_for_new_workers keep SIGINT blocked (no traceback from each), while the
    main process gets its mask back."""
    import multiprocessing
    import signal
    from concurrent.futures import ProcessPoolExecutor

    from alexnet_dali.errors import ctrl_c_blocked_for_new_workers

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as pool:
        with ctrl_c_blocked_for_new_workers():
            mask = pool.submit(signal.pthread_sigmask, signal.SIG_BLOCK, [])
        assert signal.SIGINT in mask.result(timeout=120)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_signal_exit_status_is_128_plus_the_signal():
    from alexnet_dali.errors import signal_exit_status

    assert signal_exit_status("SIGINT") == 130 and signal_exit_status("SIGTERM") == 143
    assert signal_exit_status("a signal to another rank") == 143  # a DDP rank that followed
