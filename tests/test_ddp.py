"""Data parallel: 2 gloo processes under torchrun equal one process averaging both ranks' batches.

Each rank reads its own DALI shard (shard_id = global rank); the reference rebuilds both ranks'
loaders in one process, concatenates their batches and takes plain SGD steps.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from alexnet_dali.model.checkpoint import latest_checkpoint
from alexnet_dali.config.schema import AugmentConfig, LoaderConfig, ModelConfig
from alexnet_dali.loader.train import build_train_loader
from alexnet_dali.model.alexnet import build_model

pytestmark = pytest.mark.slow

STEPS, PER_RANK, LR = 2, 2, 0.001


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_gloo_ranks_average_gradients_like_one_big_batch(shard_dataset, tmp_path, where,
                                                            request):
    """From the shard folder, or from its copy in object storage (each rank reads its own shards
    from s3://; the reference always reads the local folder)."""
    data = str(shard_dataset) if where == "local" else request.getfixturevalue("s3_shards")
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "alexnet_dali.cli", "train", data, "--run-dir", str(run_dir),
           "--device", "cpu", "--threads", "1", "--workers", "1", "--batch-size",
           str(2 * PER_RANK), "--epochs", "1", "--max-steps-per-epoch", str(STEPS), "--lr",
           str(LR), "--init", "he", "--seed", "3", "--std-normalize", "--set", "model.dropout=0.0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(latest_checkpoint(run_dir), weights_only=True)
    assert state["world_size"] == 2 and state["global_step"] == STEPS
    assert len(state["loader_checkpoints"]) == 2 and len(state["rng"]) == 2
    shard_ids = [json.loads(c)["shard_id"] for c in state["loader_checkpoints"]]
    assert shard_ids == [0, 1]

    # the same two steps in one process: both ranks' batches at once, plain SGD
    torch.manual_seed(3)
    model = build_model(ModelConfig(num_classes=4, dropout=0.0, init="he"))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    loaders = [iter(build_train_loader(
        shard_dataset, loader=LoaderConfig(num_threads=1), batch_size=PER_RANK,
        augment=AugmentConfig(std_normalize=True), rank=r, world_size=2,
        device=torch.device("cpu"), seed=3)) for r in range(2)]
    for _ in range(STEPS):
        batches = [next(it) for it in loaders]
        images = torch.cat([b[0] for b in batches])
        labels = torch.cat([b[1] for b in batches])
        opt.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        opt.step()
    for name, expected in model.state_dict().items():
        torch.testing.assert_close(state["model"][name], expected, rtol=1e-4, atol=1e-5,
                                   msg=f"{name}: DDP result differs from the one-process batch")


def test_batch_that_does_not_divide_across_ranks_is_an_error():
    from alexnet_dali.config.schema import TrainConfig
    from alexnet_dali.errors import ConfigError
    from alexnet_dali.train.builders import per_rank_batch

    assert per_rank_batch(TrainConfig(batch_size=128), 4) == 32
    with pytest.raises(ConfigError, match="batch_size 128 does not divide across 3 ranks"):
        per_rank_batch(TrainConfig(batch_size=128), 3)


def _worker_with_rank(launcher_pid: int, rank: int) -> int:
    """PID of the torchrun worker (a descendant of `launcher_pid`) whose RANK is `rank`."""
    from pathlib import Path

    todo, seen = [launcher_pid], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            todo += [int(c) for c in (task / "children").read_text().split()]
    for pid in seen[1:]:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no worker with RANK={rank} under {launcher_pid}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds workers through /proc")
def test_sigterm_to_one_rank_stops_both_at_the_same_sync_point(tmp_path):
    """The ranks agree on the stop flag every log_every steps: both stop, rank 0 saves, exit 0."""
    import os
    import signal
    import time

    run_dir, log_every = tmp_path / "ddp-stop", 3
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "alexnet_dali.cli", "train", "synthetic", "--run-dir", str(run_dir),
           "--device", "cpu", "--threads", "1", "--batch-size", "2", "--epochs", "1",
           "--max-steps-per-epoch", "1000", "--log-every", str(log_every),
           "--set", "model.num_classes=4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run_dir / "metrics.jsonl").exists():  # rank 0 logged the first sync point
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no metrics.jsonl"
        time.sleep(0.1)
    os.kill(_worker_with_rank(proc.pid, 1), signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    # Each rank saves and exits 143 (128 + SIGTERM); torchrun reports those as failures, exit 1.
    assert proc.returncode == 1, err[-3000:]
    assert "exitcode  : 143" in err, err[-3000:]
    state = torch.load(latest_checkpoint(run_dir), weights_only=True)
    assert state["step_in_epoch"] % log_every == 0 and 0 < state["step_in_epoch"] < 1000
    assert len(state["loader_checkpoints"]) == 2
    assert "a signal to another rank: saved" in out + err
    assert "exit status 143; continue with --resume" in out + err


def test_a_diverging_ddp_run_stops_every_rank_at_the_same_sync_point(tmp_path):
    """lr 100 on 2 gloo ranks: both see the non-finite loss and weights at the same sync point
    (the flags ride the one all-reduce), both exit 3 with the same line, and the run dir keeps
    only the finite checkpoint before it."""
    import re

    run_dir = tmp_path / "ddp-nan"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "alexnet_dali.cli", "train", "synthetic", "--run-dir", str(run_dir),
           "--device", "cpu", "--threads", "1", "--batch-size", "4", "--epochs", "1",
           "--max-steps-per-epoch", "6", "--log-every", "1", "--checkpoint-every", "1",
           "--keep-checkpoints", "1", "--lr", "100", "--set", "model.num_classes=4",
           "--set", "model.fc_width=64"]  # small checkpoints: the temp folder stays under 1 GB
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # torchrun: a worker failed
    assert "exitcode  : 3" in done.stderr, done.stderr[-3000:]
    lines = re.findall(r"error: training diverged at (epoch 1, step \d of 6 \(global step \d\))",
                       done.stdout + done.stderr)
    assert len(lines) == 2 and lines[0] == lines[1], done.stderr[-3000:]
    (kept,) = list(run_dir.glob("checkpoints/ckpt-*.pt"))
    step = int(re.search(r"global step (\d)", lines[0]).group(1))
    assert kept.name == f"ckpt-0000-{step - 1:07d}.pt"
