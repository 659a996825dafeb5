"""Output folders: the lock against a real second process, stale temporaries of dead processes,
OS errors as one line; and preprocess / pca-stats on a full disk (the error, then a re-run that
ends byte-identical to an uninterrupted run)."""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from test_preprocess_runs import CONFIG, SMALL, output_bytes

from alexnet_dali.tools import manifest as mf
from alexnet_dali.tools import outdir
from alexnet_dali.tools import preprocess as pp
from alexnet_dali.tools import shards as shards_module
from alexnet_dali.tools.pca import pca_stats
from alexnet_dali.tools.sample_data import write_sample_data

DEAD_PID = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # above the largest PID


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outdir_src")
    write_sample_data(root, SMALL)
    return root


@pytest.fixture(scope="module")
def reference(src, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("outdir_ref")
    pp.preprocess(src, out, CONFIG, progress=False)
    return output_bytes(out)


class Holder:
    """A second Python process that runs `code` (which takes a lock) and waits until killed."""

    def __init__(self, code: str) -> None:
        script = textwrap.dedent(code) + "\nprint('ready', flush=True)\nsys.stdin.read()\n"
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys\n" + script],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no clean-up of its own; the kernel drops its locks
        self.proc.wait()


def test_a_live_holder_is_named_and_its_death_frees_the_lock(tmp_path):
    path = tmp_path / "run" / ".lock"
    holder = Holder(f"""
        from alexnet_dali.tools.outdir import FolderLock
        lock = FolderLock({str(path)!r}, "").acquire()
        assert lock.locked
    """)
    try:
        with pytest.raises(outdir.FolderInUse, match=rf"{tmp_path / 'run'}: in use by PID "
                                                     rf"{holder.pid} on {socket.gethostname()}"
                                                     r" \(it holds \.lock\); do something else"):
            outdir.FolderLock(path, "do something else").acquire()
        assert outdir.held_by_other(path) == f"PID {holder.pid} on {socket.gethostname()}"
    finally:
        holder.kill()
    assert outdir.held_by_other(path) is None
    with outdir.FolderLock(path, "") as lock:
        assert lock.locked and path.read_text() == f"{os.getpid()} {socket.gethostname()}\n"


def test_a_filesystem_without_locks_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(outdir.fcntl, "flock", no_locks)
    with outdir.FolderLock(tmp_path / ".lock", "") as lock:
        assert not lock.locked
    assert "cannot lock files" in capsys.readouterr().err


def test_only_temporaries_of_dead_processes_of_this_host_are_removed(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f"manifest.json.{host}.{DEAD_PID}.tmp"
    alive = tmp_path / f"manifest.json.{host}.{os.getpid()}.tmp"
    elsewhere = tmp_path / f"manifest.json.not-{host}.{DEAD_PID}.tmp"
    for path in (dead, alive, elsewhere):
        path.write_text("{")
    assert outdir.remove_dead_temps(tmp_path) == [dead]
    assert sorted(tmp_path.iterdir()) == sorted([alive, elsewhere])


def test_os_errors_a_user_fixes_become_one_line(tmp_path):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.tar"))
    error = outdir.explained(full, "re-run it", tmp_path)
    assert isinstance(error, outdir.OutputError)
    assert str(error) == (f"{tmp_path / 'x.tar'}: No space left on device; free space on that "
                          "filesystem, then re-run it")
    nameless = OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert str(outdir.explained(nameless, "re-run it", tmp_path)).startswith(f"{tmp_path}: ")
    other = ConnectionResetError(errno.ECONNRESET, "reset")
    assert outdir.explained(other, "re-run it", tmp_path) is None  # keeps its traceback
    with pytest.raises(ConnectionResetError):
        with outdir.explain_os_errors("re-run it", tmp_path):
            raise other


def failing_nth(real, n: int, calls: list):
    """`real`, except that call number n raises ENOSPC (a disk that just filled up)."""
    def call(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)
    return call


def assert_nothing_half_done(out: Path, reference: dict[str, bytes]) -> None:
    """No temporaries; every shard that has a record is complete and final; no manifest."""
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / "manifest.json").exists()
    for record in out.glob("*/*-*.json"):
        tar = record.with_suffix(".tar")
        assert tar.read_bytes() == reference[tar.relative_to(out).as_posix()]


@pytest.mark.parametrize("where, n, named", [
    ("tar member", 10, r"train-000001\.tar\.tmp"),
    ("tar fsync", 8, r"train-000002\.tar\.tmp"),
    ("index fsync", 9, r"train-000002\.idx\.tmp"),
    ("record fsync", 10, r"train-000002\.json\..+\.tmp"),
])
def test_disk_full_while_writing_then_a_rerun_is_byte_identical(src, reference, tmp_path,
                                                                monkeypatch, where, n, named):
    calls: list = []
    if where == "tar member":  # inside a shard: the 10th member written overall
        target = shards_module.tarfile.TarFile
        monkeypatch.setattr(target, "addfile", failing_nth(target.addfile, n, calls))
    else:  # fsyncs: the plan (1), then per shard tar, index, record: shard 2's are 8, 9, 10
        monkeypatch.setattr(os, "fsync", failing_nth(os.fsync, n, calls))
    with pytest.raises(outdir.OutputError, match=rf"^{tmp_path}/train/{named}: No space left on "
                                                 r"device; free space on that filesystem, then "
                                                 r"re-run the same command: it resumes"):
        pp.preprocess(src, tmp_path, CONFIG, progress=False)
    assert_nothing_half_done(tmp_path, reference)
    monkeypatch.undo()
    pp.preprocess(src, tmp_path, CONFIG, progress=False)
    assert output_bytes(tmp_path) == reference


def limited(max_bytes: int):
    """preexec_fn: files over `max_bytes` fail with EFBIG (SIGXFSZ ignored, as a full disk)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_cli_file_size_limit_is_one_error_line_then_a_rerun_completes(src, reference, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "alexnet_dali.cli", "preprocess", str(src), str(out),
            "--shard-size", str(CONFIG.shard_size), "--workers", "1", "--seed", str(CONFIG.seed),
            "--quiet"]
    biggest = max(len(v) for k, v in reference.items() if k.endswith(".tar"))
    cut = subprocess.run(args, capture_output=True, text=True, preexec_fn=limited(biggest - 1))
    assert cut.returncode == 2, cut.stderr
    lines = cut.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out / 'train'}/train-00"), lines
    assert "File too large; a file-size limit stopped it" in lines[0]
    assert lines[0].endswith("then re-run the same command: it resumes (finished shards are kept)")
    assert_nothing_half_done(out, reference)
    subprocess.run(args, check=True, capture_output=True)
    assert output_bytes(out) == reference


def test_pca_stats_on_a_full_disk_leaves_no_half_file(src, reference, tmp_path, monkeypatch):
    pp.preprocess(src, tmp_path, CONFIG, progress=False)
    planted = tmp_path / f"pca.json.{socket.gethostname()}.{DEAD_PID}.tmp"
    planted.write_text("{")  # a killed earlier run's
    monkeypatch.setattr(os, "fsync", failing_nth(os.fsync, 1, []))  # pca.json's fsync
    with pytest.raises(outdir.OutputError, match=r"pca\.json\..*\.tmp: No space left on device.*"
                                                 "then re-run pca-stats"):
        pca_stats(tmp_path, workers=1, mean_image=True, progress=False)
    assert not planted.exists() and not (tmp_path / "pca.json").exists()
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "mean_image.npy").exists()  # written whole before pca.json (atomic too)


def test_a_part_being_built_by_a_live_process_is_refused(src, reference, tmp_path):
    holder = Holder(f"""
        from pathlib import Path
        from alexnet_dali.tools.manifest import lock_part
        lock_part(Path({str(tmp_path)!r}), "train", (1, 2))
    """)
    try:
        with pytest.raises(outdir.FolderInUse, match=rf"in use by PID {holder.pid} .*part 1/2"):
            pp.preprocess(src, tmp_path, replace(CONFIG, part=(1, 2)), progress=False)
        with pytest.raises(outdir.FolderInUse, match=rf"PID {holder.pid} .* is building it as "
                                                     r"part-1-of-2; .* --part i/2"):
            pp.preprocess(src, tmp_path, replace(CONFIG, part=(2, 3)), progress=False)
        # another part of the same n shares OUT with it: that is what --part is for
        assert pp.preprocess(src, tmp_path, replace(CONFIG, part=(2, 2)), progress=False) is None
    finally:
        holder.kill()
    planted = tmp_path / "train" / f"_plan.json.{socket.gethostname()}.{DEAD_PID}.tmp"
    planted.write_text("{")
    assert pp.preprocess(src, tmp_path, replace(CONFIG, part=(1, 2)), progress=False) is not None
    assert not planted.exists()
    assert output_bytes(tmp_path) == reference
    assert mf.all_shards_done(tmp_path)


def test_eval_json_on_a_full_disk_is_one_error_naming_it(tmp_path, monkeypatch):
    from alexnet_dali.evaluation import write_json

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(outdir.OutputError, match=rf"^{tmp_path / 'eval.json'}: No space left on "
                                                 "device; free space on that filesystem, then "
                                                 "run eval again"):
        write_json({"top1_err": 0.5}, tmp_path / "eval.json")
