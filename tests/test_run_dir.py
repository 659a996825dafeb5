"""A run dir has one live trainer: a second one exits 2 naming the first's PID; a SIGKILLed
trainer frees it and its leftover temporaries are removed; a full disk during a checkpoint save
is one error line, and `--resume` then ends with the weights of an uninterrupted run."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from faults import DEAD_PID, limited

from alexnet_dali.model import checkpoint as ckpt_io
from alexnet_dali.config.schema import ModelConfig, TrainConfig
from alexnet_dali.tools.outdir import OutputError
from alexnet_dali.train.loop import train

pytestmark = pytest.mark.slow


def train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "alexnet_dali.cli", "train", "synthetic", "--run-dir",
            str(run_dir), "--device", "cpu", "--threads", "1", "--batch-size", "2",
            "--epochs", "1", "--log-every", "1", "--set", "model.num_classes=4",
            "--set", "tensorboard=false", *extra]


def test_one_live_trainer_per_run_dir(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd(run, "--max-steps-per-epoch", "100000"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists():  # it holds the lock from its start
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(train_cmd(run, "--max-steps-per-epoch", "1"),
                                capture_output=True, text=True)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines()[-1].startswith(
            f"error: {run}: in use by PID {first.pid} on ")
        assert "choose another --run-dir" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    leftover = run / "checkpoints" / f".ckpt-0000-0000007.pt.tmp-{DEAD_PID}"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a checkpoint")  # what a SIGKILL during a save leaves
    third = subprocess.run(train_cmd(run, "--max-steps-per-epoch", "1"), capture_output=True,
                           text=True)
    assert third.returncode == 0, third.stderr
    assert f"removing {leftover}: left by a save that was killed" in third.stdout + third.stderr
    assert not leftover.exists()
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["ckpt-0001-0000001.pt"]


def test_a_file_size_limit_during_a_save_is_one_error_line(tmp_path):
    """Real torch.save under RLIMIT_FSIZE (EFBIG, reported by torch as a RuntimeError)."""
    run = tmp_path / "run"
    cut = subprocess.run(train_cmd(run, "--max-steps-per-epoch", "2", "--checkpoint-every", "1"),
                         capture_output=True, text=True, preexec_fn=limited(1 << 20))
    assert cut.returncode == 2, cut.stderr
    assert "Traceback" not in cut.stderr
    last = cut.stderr.strip().splitlines()[-1]
    assert last.endswith(f"error: {run}/checkpoints/.ckpt-0000-0000001.pt.tmp-{pid_of(last)}: "
                         "File too large; a file-size limit stopped it (`ulimit -f`, or the "
                         "filesystem's largest file): raise it or write elsewhere, then "
                         "continue with --resume (from the newest complete checkpoint; if none "
                         "was saved yet, run the same command again)")
    assert not list((run / "checkpoints").iterdir())  # no temporary left, no checkpoint


def pid_of(line: str) -> str:
    return line.split(".pt.tmp-")[1].split(":")[0]


def test_disk_full_during_a_save_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    def config(name: str) -> TrainConfig:
        return TrainConfig(data="synthetic", run_dir=str(tmp_path / name), epochs=1, batch_size=2,
                           max_steps_per_epoch=3, checkpoint_every=2, device="cpu", threads=2,
                           deterministic=True, log_every=1, tensorboard=False, keep_checkpoints=1,
                           model=ModelConfig(num_classes=4, init="he", fc_width=64))

    train(config("full"))
    expected = torch.load(ckpt_io.latest_checkpoint(tmp_path / "full"), weights_only=True)
    shutil.rmtree(tmp_path / "full")  # one run's checkpoints at a time on disk
    real_save, saves = torch.save, []

    def save_on_a_filling_disk(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # the end-of-epoch save: the disk fills up half way
            f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_on_a_filling_disk)
    run = tmp_path / "cut"
    with pytest.raises(OutputError, match=rf"^{run}/checkpoints/\.ckpt-0001-0000003\.pt\.tmp-"
                                          rf"{os.getpid()}: No space left on device; free space "
                                          r"on that filesystem, then continue with --resume \("
                                          "from the newest complete checkpoint"):
        train(config("cut"))
    monkeypatch.undo()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["ckpt-0000-0000002.pt"]
    summary = train(config("cut"), resume=run)
    assert summary["completed"] and summary["global_step"] == 3
    got = torch.load(ckpt_io.latest_checkpoint(run), weights_only=True)
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, got["model"][name]), name


def test_a_metrics_line_torn_by_a_full_disk_is_dropped_on_resume(tmp_path):
    from alexnet_dali.train.runlog import RunLog

    lines = ['{"kind": "train", "step": 1}', '{"kind": "train", "step": 2}', '{"kind": "tr']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    RunLog(tmp_path, tensorboard=False).drop_after(1)
    assert (tmp_path / "metrics.jsonl").read_text() == lines[0] + "\n"
