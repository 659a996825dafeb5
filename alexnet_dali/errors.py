"""The project's user errors (one family) and the one way the CLI reports them.

Every stage raises a `UserError` subclass for input a user must fix: a config key or value, a
missing or broken data file, a checkpoint that does not fit the run. The message names the
file, key or value and says what to do. Every command is wrapped in `report_user_errors`: such an
error prints one `error: ...` line on stderr and exits with status 2. Anything else is a bug and
keeps its traceback; `alexnet-dali --debug CMD` (or ALEXNET_DALI_DEBUG=1) shows the traceback of
user errors too. This module imports nothing of the project, so every stage can use it.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

EXIT_USER_ERROR = 2
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


def debug_requested() -> bool:
    """True with `alexnet-dali --debug` or ALEXNET_DALI_DEBUG set (not to "" or "0")."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    import click

    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(DEBUG_META))


def report_user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a CLI command: a UserError becomes one `error: ...` line and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as e:
            if debug_requested():
                raise
            message = " ".join(str(e).splitlines())  # one line, also for chained library text
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    wrapper.reports_user_errors = True  # type: ignore[attr-defined]  # checked by the CLI tests
    return wrapper
