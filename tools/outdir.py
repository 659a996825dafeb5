"""Writing into an output folder safely: exclusive use, stale temporaries, OS errors as one line.

Exclusive use is an OS file lock (`flock`) on a lock file inside the folder. The kernel drops it
when its holder exits, however it exits (SIGKILL included), so a lock is never stale and the lock
file is never deleted. The holder writes "PID HOST" into the file so that a refused process can
say who holds it. Where the filesystem cannot lock (some NFS mounts), work goes on unlocked with
a warning instead of failing.

Temporary files are named `<final name>.<HOST>.<PID>.tmp` (`temp_path`), so a later run on the
same host can tell a killed process's leftovers (PID gone) from a live one's.

OS errors that a user fixes (disk full, quota, read-only, permissions) become one `OutputError`
line naming the file and what to do (`explain_os_errors`); others keep their traceback.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alexnet_dali.errors import DataError

# flock on a filesystem that cannot lock: NFS without a lock manager (ENOLCK), FUSE (EOPNOTSUPP)
_CANNOT_LOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FolderInUse(DataError):
    """Another live process holds the lock of a folder this one must write."""


class OutputError(DataError):
    """An OS error a user fixes (disk full, quota, read-only, permissions), with what to do."""


# errno -> what to do; only these become an OutputError
ADVICE = {
    errno.ENOSPC: "free space on that filesystem",
    errno.EDQUOT: "free space or raise your disk quota",
    errno.EFBIG: "a file-size limit stopped it (`ulimit -f`, or the filesystem's largest file): "
                 "raise it or write elsewhere",
    errno.EROFS: "the filesystem is mounted read-only: choose a writable folder",
    errno.EACCES: "fix its permissions or choose another folder",
    errno.EPERM: "fix its permissions or choose another folder",
    errno.EIO: "the device reported an I/O error: check the disk",
    errno.ENOTDIR: "part of that path is a file, not a folder: choose another path",
    errno.EEXIST: "a file of that name is in the way of a folder: choose another path",
    errno.EISDIR: "that is a folder: give a file name",
}


def this_process() -> str:
    """"PID HOST" of this process, as lock files record it."""
    return f"{os.getpid()} {socket.gethostname()}"


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Give OS errors raised inside the file name they lack (a failed write, flush or fsync)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON to a temporary name, fsync, rename: readers never see half a file."""
    tmp = temp_path(path)
    try:
        with naming(tmp), open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)  # ASCII: odd file names stay valid
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def explained(error: OSError, then: str, where: str | Path) -> OutputError | None:
    """The OutputError line for an OS error a user fixes (the file, what to do, `then`); None
    for any other OS error (a bug: it keeps its traceback). `where` stands in for a missing
    file name."""
    if error.errno not in ADVICE:
        return None
    return OutputError(f"{error.filename or where}: {error.strerror}; {ADVICE[error.errno]}, "
                       f"then {then}")


@contextmanager
def explain_os_errors(then: str, where: str | Path) -> Iterator[None]:
    """Raise OS errors a user fixes as one OutputError line (see `explained`)."""
    try:
        yield
    except OSError as e:
        error = explained(e, then, where)
        if error is None:
            raise
        raise error from e


def temp_path(path: str | Path) -> Path:
    """The temporary name to write `path` under before renaming it: `<name>.<HOST>.<PID>.tmp`."""
    path = Path(path)
    return path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def remove_dead_temps(folder: str | Path) -> list[Path]:
    """Delete the `temp_path` files in `folder` left by processes of this host that are gone."""
    host, removed = socket.gethostname(), []
    for path in Path(folder).glob(f"*.{host}.*.tmp"):
        stem, _, pid = path.name[:-len(".tmp")].rpartition(".")
        if stem.endswith(f".{host}") and pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class FolderLock:
    """An exclusive, non-blocking flock on `path` (created if needed); `locked` says if it holds.

    Use as a context manager, or `acquire()`/`release()`. `busy_hint` ends the error raised when
    another process holds the lock (what the user should do instead).
    """

    def __init__(self, path: str | Path, busy_hint: str) -> None:
        self.path = Path(path)
        self.busy_hint = busy_hint
        self.locked = False
        self._tried = False  # acquire() was called (entering the context does not repeat it)
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise FolderInUse naming the holder (warn where it cannot lock)."""
        self._tried = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            self.release()
            raise FolderInUse(f"{self.path.parent}: in use by {holder} (it holds "
                              f"{self.path.name}); {self.busy_hint}") from None
        except OSError as e:
            self.release()
            if e.errno not in _CANNOT_LOCK:
                raise
            print(f"warning: {self.path}: this filesystem cannot lock files ({e.strerror}); "
                  "going on unlocked: make sure no other process writes here", file=sys.stderr)
            return self
        self.locked = True
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{this_process()}\n".encode(), 0)
        return self

    def holder(self) -> str:
        """"PID n on HOST" as the lock file records it ("another process" if unreadable)."""
        try:
            pid, host = self.path.read_text().split()[:2]
        except (OSError, ValueError):
            return "another process"
        return f"PID {pid} on {host}"

    def release(self) -> None:
        """Drop the lock (closing the file drops it; the file stays)."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self.locked = None, False

    def __enter__(self) -> "FolderLock":
        return self if self._tried else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_by_other(path: str | Path) -> str | None:
    """The holder ("PID n on HOST") if another live process holds the lock at `path`, else None."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return FolderLock(path, "").holder()
    except OSError as e:
        if e.errno not in _CANNOT_LOCK:
            raise
    finally:
        os.close(fd)
    return None
