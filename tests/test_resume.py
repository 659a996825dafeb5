"""Exact resume: SIGKILL a CPU training process mid-epoch, resume, compare with an unbroken run.

Both runs use the real DALI loader on the shared shard fixture, deterministic torch algorithms
and a fixed thread count, so the final weights must be bitwise equal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alexnet_dali.model.checkpoint import latest_checkpoint, list_checkpoints

pytestmark = pytest.mark.slow

TRAIN_ARGS = ["--device", "cpu", "--threads", "2", "--workers", "1", "--batch-size", "8",
              "--epochs", "2", "--max-steps-per-epoch", "3",
              "--keep-checkpoints", "1", "--deterministic", "--init", "he", "--lr", "0.001",
              "--std-normalize", "--log-every", "1", "--set", "model.fc_width=64"]
# fc_width 64: 25 MB checkpoints, not 455 (the suite's temp folder stays under 1 GB)


def _train_cmd(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "alexnet_dali.cli", "train", str(data), "--run-dir",
            str(run_dir), *TRAIN_ARGS, *extra]


def _final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(latest_checkpoint(run_dir), weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"]) == (2, 6)
    return ckpt["model"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120,
              alone: bool = False) -> None:
    """Until `path` exists (`alone`: and keep-last-1 has deleted the checkpoints before it)."""
    deadline = time.monotonic() + timeout
    while not path.exists() or (alone and list_checkpoints(path.parent.parent) != [path]):
        assert proc.poll() is None, f"training exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_resume_after_sigkill_mid_epoch_is_bitwise_exact(shard_dataset, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    first = subprocess.run(_train_cmd(shard_dataset, full), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    expected = _final_model(full)
    shutil.rmtree(full)  # one run's checkpoints at a time on disk

    proc = subprocess.Popen(_train_cmd(shard_dataset, killed, "--checkpoint-every", "2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mid_epoch_2 = killed / "checkpoints" / "ckpt-0001-0000005.pt"  # epoch 2, after its 2nd step
    _wait_for(mid_epoch_2, proc, alone=True)  # the next save is a step and a validation away
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(mid_epoch_2, weights_only=True)
    assert state["step_in_epoch"] == 2 and len(state["loader_checkpoints"]) == 1

    done = subprocess.run(_train_cmd(shard_dataset, killed, "--resume", str(mid_epoch_2)),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").open()
             if '"train"' in line]
    assert steps == list(range(1, 7)), "metrics.jsonl repeats or misses steps after the resume"
    got = _final_model(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_then_exits_128_plus_its_number_and_resume_says_where(tmp_path, sig):
    """SIGTERM -> 143, Ctrl-C (SIGINT to the process group, as a terminal sends it) -> 130,
    each after a checkpoint; --resume names the checkpoint and step, and on a finished run
    says it is complete (exit 0)."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "alexnet_dali.cli", "train", "synthetic", "--run-dir",
           str(run_dir), "--device", "cpu", "--threads", "2", "--batch-size", "2", "--epochs", "1",
           "--keep-checkpoints", "1",
           "--max-steps-per-epoch", "1000", "--log-every", "1", "--set", "model.num_classes=4",
           "--set", "model.fc_width=64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    _wait_for(run_dir / "metrics.jsonl", proc)
    os.killpg(proc.pid, sig)
    err = proc.communicate(timeout=120)[0]
    status = 128 + sig
    assert proc.returncode == status, err
    path = latest_checkpoint(run_dir)
    assert f"{sig.name}: saved {path} at epoch 1 step " in err
    assert f"exit status {status}; continue with --resume" in err
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 0 and 1 <= state["step_in_epoch"] < 1000
    assert state["global_step"] == state["step_in_epoch"]

    done = state["step_in_epoch"]
    resumed = subprocess.run([*cmd[:-6], "--max-steps-per-epoch", str(done + 1), "--resume"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout
    assert (f"resuming from {path}: epoch 1 of 1, {done} of {done + 1} steps done, global step "
            f"{done}") in resumed.stdout
    again = subprocess.run([*cmd[:-6], "--resume"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
    assert again.returncode == 0, again.stdout
    final = latest_checkpoint(run_dir)
    assert again.stdout.splitlines()[-1] == (
        f"{final}: the run is complete (1 of 1 epochs, global step {done + 1}); nothing to do "
        "(to train longer: --resume --epochs N)")
