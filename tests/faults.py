"""Simulated failures for the robustness tests: a PID no process has, a file-size limit for a
subprocess, an OS call that fails on its n-th use, and a second process holding a lock.

No tmpfs or loop filesystem is available in CI, so a full disk is simulated two ways: patching a
write (ENOSPC, in process) and RLIMIT_FSIZE in a subprocess (the kernel's EFBIG on a real write).
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

DEAD_PID = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # above the largest PID


def failing_nth(real, n: int, calls: list):
    """`real`, except that call number n raises ENOSPC (a disk that just filled up)."""
    def call(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)
    return call


def limited(max_bytes: int):
    """preexec_fn: files over `max_bytes` fail with EFBIG (SIGXFSZ ignored, as a full disk)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


class Holder:
    """A second Python process that runs `code` (which takes a lock) and waits until killed."""

    def __init__(self, code: str) -> None:
        script = textwrap.dedent(code) + "\nprint('ready', flush=True)\nsys.stdin.read()\n"
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys\n" + script],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of its own; the kernel drops its locks."""
        self.proc.kill()
        self.proc.wait()
