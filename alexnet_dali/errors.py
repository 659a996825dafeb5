"""The project's user errors (one family) and the one way the CLI reports them.

Every stage raises a `UserError` subclass for input a user must fix: a config key or value, a
missing or broken data file, a checkpoint that does not fit the run. The message names the
file, key or value and says what to do. Every command is wrapped in `report_user_errors`: such an
error prints one `error: ...` line on stderr and exits with status 2 (a `TrainingDiverged` run:
3, so that a script tells "lower the lr" from "fix the input"). Ctrl-C prints one
`interrupted: ...` line (saying how to go on when the command resumes) and exits with status 130,
as a shell reports a process SIGINT ended. Anything else is a bug and keeps its traceback;
`alexnet-dali --debug CMD` (or ALEXNET_DALI_DEBUG=1) shows the traceback of user errors too.
This module imports nothing of the project, so every stage can use it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from typing import Any, Callable, Iterator

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3  # train: a non-finite loss or weight stopped the run (docs/TRAINING.md)
EXIT_INTERRUPTED = 130  # 128 + SIGINT
DEBUG_ENV = "ALEXNET_DALI_DEBUG"
DEBUG_META = "alexnet_dali.debug"  # key in click's context meta, set by `alexnet-dali --debug`


class UserError(Exception):
    """Input a user must fix; the message says what was wrong, where, and what to do."""


class ConfigError(UserError):
    """A configuration key or value (TOML file, --set, a flag, a checkpoint's config)."""


class DataError(UserError):
    """Input data: source images, the shard folder (manifest, pca.json, shards), run files."""


class CorruptSampleError(DataError):
    """A shard holds a sample DALI cannot decode (DALI cannot skip it)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit this run."""


class TrainingDiverged(UserError):
    """The loss or the weights became non-finite: the settings (the lr first) must change.

    Reported like every UserError, with its own exit status (EXIT_DIVERGED)."""

    exit_status = EXIT_DIVERGED


class Interrupted(Exception):
    """Ctrl-C stopped a command; the message says what was kept and how to go on."""


def signal_exit_status(signal_name: str) -> int:
    """128 + the signal's number (SIGINT 130, SIGTERM 143): what a shell reports for a process
    the signal ended, and what `train` exits with after saving on one. A name that is no signal's
    (a DDP rank that stopped because another rank was signalled) gives SIGTERM's 143."""
    number = getattr(signal.Signals, signal_name, signal.SIGTERM)
    return 128 + int(number)


@contextlib.contextmanager
def ctrl_c_blocked_for_new_workers() -> Iterator[None]:
    """Start worker processes inside this: SIGINT is blocked meanwhile, and a process started
    here inherits the block and keeps it. A terminal's Ctrl-C goes to the whole process group;
    only the main process then sees it, reports it once and stops its workers, instead of each
    worker printing a KeyboardInterrupt traceback. A SIGINT arriving meanwhile is delivered to
    this process on leaving."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def debug_requested() -> bool:
    """True with `alexnet-dali --debug` or ALEXNET_DALI_DEBUG set (not to "" or "0")."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    import click

    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(DEBUG_META))


def report_user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a CLI command: a UserError becomes one `error: ...` line and exit status 2 (its
    `exit_status` where it has one: TrainingDiverged's 3); Ctrl-C (KeyboardInterrupt, or
    Interrupted saying how to go on) one line and status 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as e:
            if debug_requested():
                raise
            _report("error", e)
            sys.exit(getattr(e, "exit_status", EXIT_USER_ERROR))
        except (Interrupted, KeyboardInterrupt) as e:
            if debug_requested():
                raise
            _report("interrupted", e)
            sys.exit(EXIT_INTERRUPTED)

    wrapper.reports_user_errors = True  # type: ignore[attr-defined]  # checked by the CLI tests
    return wrapper


def _report(kind: str, error: BaseException) -> None:
    message = " ".join(str(error).splitlines())  # one line, also for chained library text
    print(f"{kind}: {message}" if message else kind, file=sys.stderr, flush=True)
