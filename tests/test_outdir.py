"""Output folders: the lock against a real second process, stale temporaries of dead processes,
OS errors as one line; pca-stats and eval --json on a full disk."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path

import pytest
from faults import DEAD_PID, Holder, failing_nth

from alexnet_dali.tools import outdir
from alexnet_dali.tools.pca import pca_stats


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


def test_pca_stats_on_a_full_disk_leaves_no_half_file(shard_dataset, tmp_path, monkeypatch):
    tmp_path = Path(shutil.copytree(shard_dataset, tmp_path / "shards"))
    (tmp_path / "pca.json").unlink()
    (tmp_path / "mean_image.npy").unlink()
    planted = tmp_path / f"pca.json.{socket.gethostname()}.{DEAD_PID}.tmp"
    planted.write_text("{")  # a killed earlier run's
    # the second fsync is pca.json's (mean_image.npy's is the first)
    monkeypatch.setattr(os, "fsync", failing_nth(os.fsync, 2, []))
    with pytest.raises(outdir.OutputError, match=r"pca\.json\..*\.tmp: No space left on device.*"
                                                 "then re-run pca-stats"):
        pca_stats(tmp_path, workers=1, mean_image=True, progress=False)
    assert not planted.exists() and not (tmp_path / "pca.json").exists()
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "mean_image.npy").exists()  # written whole before pca.json (atomic too)


def test_pca_stats_cli_on_a_full_disk_is_one_line_and_a_rerun_completes(shard_dataset, tmp_path,
                                                                        monkeypatch):
    from click.testing import CliRunner

    from alexnet_dali.cli import main

    shards = Path(shutil.copytree(shard_dataset, tmp_path / "shards"))
    (shards / "pca.json").unlink()
    args = ["pca-stats", str(shards), "--workers", "1", "--quiet"]
    with monkeypatch.context() as patched:
        patched.setattr(os, "fsync", failing_nth(os.fsync, 2, []))  # pca.json's
        full = CliRunner().invoke(main, args)
    assert full.exit_code == 2, full.output
    line, = full.output.strip().splitlines()
    assert line.startswith("error: ") and "No space left on device" in line
    assert "re-run pca-stats" in line and not (shards / "pca.json").exists()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert (shards / "pca.json").read_bytes() == (shard_dataset / "pca.json").read_bytes()


def test_eval_json_on_a_full_disk_is_one_error_naming_it(tmp_path, monkeypatch):
    from alexnet_dali.use.report import write_json

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(outdir.OutputError, match=rf"^{tmp_path / 'eval.json'}: No space left on "
                                                 "device; free space on that filesystem, then "
                                                 "run eval again"):
        write_json({"top1_err": 0.5}, tmp_path / "eval.json")
