"""What `train` prints per epoch and at the end (`runreport`), on hand-made run dirs."""

from __future__ import annotations

import json
from pathlib import Path

from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.train.runreport import (
    duration_text,
    epoch_line,
    errors_text,
    size_text,
    summary_lines,
)

VAL = {"loss": 1.38629, "top1_err": 0.75, "top5_err": 0.0}


def test_sizes_and_durations_read_as_people_write_them() -> None:
    assert [size_text(n) for n in (999, 4_500, 456_123_456, 1_368_370_368)] == [
        "1 kB", "4 kB", "456 MB", "1.37 GB"]
    assert [duration_text(s) for s in (0.4, 45, 433, 7_500)] == [
        "0 s", "45 s", "7 min 13 s", "2 h 05 min"]


def test_top5_only_with_more_than_five_classes() -> None:
    assert errors_text(VAL, 4) == "loss 1.3863 top-1 err 0.7500"
    assert errors_text(VAL, 5) == "loss 1.3863 top-1 err 0.7500"
    assert errors_text(VAL, 6) == "loss 1.3863 top-1 err 0.7500 top-5 err 0.0000"


def test_the_epoch_line_has_val_train_lr_and_the_saved_checkpoint(tmp_path) -> None:
    saved = tmp_path / "ckpt-0003-0000024.pt"
    saved.write_bytes(b"x" * 2_500_000)
    line = epoch_line(3, VAL, {"loss": 1.40213, "top1_err": 0.74125}, 4, 0.001, saved)
    assert line == ("epoch 3: val loss 1.3863 top-1 err 0.7500; train loss 1.4021 top-1 err "
                    "0.7412; lr -> 0.001; saved ckpt-0003-0000024.pt (2 MB)")
    assert epoch_line(1, VAL, None, 1000, None, None) == (
        "epoch 1: val loss 1.3863 top-1 err 0.7500 top-5 err 0.0000")


def fake_run(run: Path, errors: list[float], steps_per_epoch: int, kept: int) -> list[Path]:
    """metrics.jsonl with a val line per epoch and the newest `kept` epoch-end checkpoints."""
    (run / "checkpoints").mkdir(parents=True)
    lines, paths = [], []
    for epoch, err in enumerate(errors, 1):
        step = epoch * steps_per_epoch
        lines.append({"kind": "val", "epoch": epoch, "step": step, "loss": 1.0, "top1_err": err,
                      "top5_err": 0.0})
        paths.append(run / "checkpoints" / f"ckpt-{epoch:04d}-{step:07d}.pt")
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for path in paths[-kept:]:
        path.write_bytes(b"c" * 3_000_000)
    return paths


def test_the_summary_names_the_best_checkpoint_the_disk_and_the_next_commands(tmp_path):
    run = tmp_path / "run"
    paths = fake_run(run, [0.6, 0.3, 0.2, 0.25, 0.3, 0.3], 8, kept=6)
    cfg = TrainConfig(data="demo/shards", run_dir=str(run), epochs=6, keep_checkpoints=6)
    assert summary_lines(cfg, 0, 433.2) == [
        "done: 6 epochs in 7 min 13 s",
        f"best: val top-1 err 0.2000 after epoch 3 ({paths[2]})",
        f"checkpoints: 6 in {run / 'checkpoints'}, 18 MB (3 MB each; --keep-checkpoints N "
        "keeps the newest N)",
        f"next: alexnet-dali eval demo/shards --checkpoint {paths[2]} --tencrop",
        f"next: alexnet-dali figures {run}",
    ]


def test_the_summary_says_when_the_best_checkpoint_was_pruned(tmp_path):
    run = tmp_path / "my run"
    fake_run(run, [0.6, 0.2, 0.25, 0.3, 0.3, 0.3], 8, kept=3)
    cfg = TrainConfig(data="demo/shards", run_dir=str(run), epochs=6, keep_checkpoints=3)
    lines = summary_lines(cfg, 4, 61)
    assert lines[0] == "done: epochs 5-6 of 6 (resumed) in 1 min 1 s"
    assert lines[1] == ("best: val top-1 err 0.2000 after epoch 2 (its checkpoint is deleted: "
                        "the run keeps the newest 3; --keep-checkpoints N)")
    assert lines[2].startswith(f"checkpoints: 3 in {run / 'checkpoints'}, 9 MB")
    assert lines[3] == f"next: alexnet-dali eval demo/shards --checkpoint '{run}' --tencrop"


def test_of_equal_epochs_the_latest_is_best_and_the_newest_is_named_by_the_run_dir(tmp_path):
    run = tmp_path / "run"
    paths = fake_run(run, [0.6, 0.2, 0.2], 8, kept=1)
    cfg = TrainConfig(data="synthetic", run_dir=str(run), epochs=3, keep_checkpoints=1)
    lines = summary_lines(cfg, 0, 5)
    assert lines[1] == f"best: val top-1 err 0.2000 after epoch 3 ({paths[2]})"
    assert lines[2] == (f"checkpoints: 1 in {run / 'checkpoints'}, 3 MB (--keep-checkpoints N "
                        "keeps the newest N)")
    assert lines[3] == f"next: alexnet-dali eval synthetic --checkpoint {run} --tencrop"
