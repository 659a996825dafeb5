"""No host sync per training step: the loss and the stop flag cross ranks only at sync points.

A fake 2-rank run (distributed.active() patched to True, the collectives to local stand-ins)
counts every all-reduce and every tensor → Python conversion the training loop makes; a loop that
synced once per step again would make one per step.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from alexnet_dali.train import distributed, loop as trainer, run as train_run
from alexnet_dali.train.cadence import Agreed, EpochTrain, LossWindow, is_sync_point
from alexnet_dali.config.schema import ModelConfig, TrainConfig
from alexnet_dali.train.steps import StepOutput
from alexnet_dali.loader.synthetic import SyntheticTrainLoader

STEPS, LOG_EVERY = 12, 4
CONVERSIONS = ("item", "tolist", "__bool__", "__float__", "__int__")


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    values = dict(data="synthetic", run_dir=str(tmp_path / "run"), epochs=1, batch_size=2,
                  device="cpu", max_steps_per_epoch=STEPS, log_every=LOG_EVERY, threads=1,
                  tensorboard=False, model=ModelConfig(num_classes=4))
    return TrainConfig(**{**values, **overrides})


@pytest.fixture
def small_steps(monkeypatch):
    """A tiny network in AlexNet's place and no validation: the loop is what runs."""
    monkeypatch.setattr(trainer, "evaluate",
                        lambda *a, **k: {"loss": 1.0, "top1_err": 0.5, "top5_err": 0.0,
                                         "samples": 4})

    def tiny_network(cfg, info):
        net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(3, cfg.model.num_classes))
        return net, info.device

    monkeypatch.setattr(train_run, "build_network", tiny_network)


@pytest.fixture
def fake_two_ranks(monkeypatch):
    """distributed.active() is True; collectives are counted and act as on 2 identical ranks."""
    calls = {"all_reduce": 0, "conversions": 0}

    def all_reduce(tensor, op="sum"):
        calls["all_reduce"] += 1
        return tensor.mul_(2) if op == "sum" else tensor

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "all_reduce", all_reduce)
    monkeypatch.setattr(distributed, "gather_objects", lambda obj: [obj, obj])
    return calls


def count_conversions(monkeypatch, calls: dict) -> None:
    for name in CONVERSIONS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            calls["conversions"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)


def train_lines(cfg: TrainConfig) -> list[dict]:
    path = os.path.join(cfg.run_dir, "metrics.jsonl")
    return [r for r in map(json.loads, open(path)) if r["kind"] == "train"]


def test_one_all_reduce_and_one_host_copy_per_sync_point(tmp_path, monkeypatch, small_steps,
                                                         fake_two_ranks):
    cfg = tiny_config(tmp_path, checkpoint_every=6)
    count_conversions(monkeypatch, fake_two_ranks)
    summary = trainer.train(cfg)
    assert summary["completed"] and summary["global_step"] == STEPS
    sync_steps = [s for s in range(1, STEPS + 1) if is_sync_point(cfg, s, STEPS)]
    assert sync_steps == [4, 6, 8, 12]
    assert fake_two_ranks["all_reduce"] == len(sync_steps)
    # one host copy per sync point, and one per checkpoint written (its finiteness check, while
    # torch.save copies every tensor to the host anyway): at step 6 and at the epoch's end
    saves = 2
    assert fake_two_ranks["conversions"] == len(sync_steps) + saves
    lines = train_lines(cfg)
    assert [r["step"] for r in lines] == sync_steps
    # the fake world of two identical ranks: the mean over ranks is each rank's own loss
    assert all(0.0 < r["loss"] < 10.0 for r in lines)
    # the top-1 error over a window's images (2 a step on each of the 2 ranks: 16 in the 4-step
    # windows, 8 in the 2-step ones): a multiple of 1/16
    assert all(0.0 <= r["top1_err"] <= 1.0 and (r["top1_err"] * 16).is_integer() for r in lines)


def test_under_ddp_a_signal_stops_every_rank_at_the_next_sync_point(tmp_path, monkeypatch,
                                                                    small_steps, fake_two_ranks):
    signal_at_batch(monkeypatch, 5)
    summary = trainer.train(tiny_config(tmp_path))
    assert summary["signal"] == "SIGTERM" and not summary["completed"]
    assert summary["global_step"] == 2 * LOG_EVERY  # not 5: the ranks agree at step 8


def test_alone_a_signal_stops_after_the_current_step(tmp_path, monkeypatch, small_steps):
    signal_at_batch(monkeypatch, 5)
    cfg = tiny_config(tmp_path)
    summary = trainer.train(cfg)
    assert summary["signal"] == "SIGTERM" and summary["global_step"] == 5
    assert [r["step"] for r in train_lines(cfg)] == [4, 5]  # the partial window is logged


def signal_at_batch(monkeypatch, n: int) -> None:
    """SIGTERM this process while the loader makes its n-th batch (1-based)."""
    real_batch = SyntheticTrainLoader.batch_at

    def batch(self, step):
        if step == n - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_batch(self, step)

    monkeypatch.setattr(SyntheticTrainLoader, "batch_at", batch)


def test_loss_window_means_over_steps_and_ranks(monkeypatch) -> None:
    monkeypatch.setattr(distributed, "all_reduce", lambda t, op="sum": t.mul_(2))
    window = LossWindow()
    for value, correct in ((1.0, 1), (2.0, 4), (6.0, 0)):  # batches of 4 images a rank
        window.add(StepOutput(torch.tensor(value), torch.tensor(correct)), images=8)
    agreed = window.agree(False, world_size=2, counts=[1.0, 3.0],
                          device_values=torch.tensor([0.0, 1.0]))
    assert agreed.loss == pytest.approx(3.0) and agreed.images_per_s > 0 and not agreed.stop
    assert agreed.images == 24 and agreed.top1_err == pytest.approx(1 - 10 / 24)
    assert agreed.counts == [2.0, 6.0] and agreed.device_values == [0.0, 2.0]  # over 2 ranks
    window.reset()
    window.add(StepOutput(torch.tensor(1.0), torch.tensor(2)), images=8)
    assert window.agree(True, world_size=2).stop
    with pytest.raises(RuntimeError):
        LossWindow().agree(False, world_size=1)


def test_the_epoch_train_numbers_weight_each_window_by_its_images() -> None:
    epoch = EpochTrain()
    assert epoch.result() is None
    epoch.add(Agreed(loss=2.0, top1_err=0.5, rate=1.0, stop=False, images=30))
    epoch.add(Agreed(loss=1.0, top1_err=0.25, rate=1.0, stop=False, images=10))
    assert epoch.result() == pytest.approx({"loss": 1.75, "top1_err": 0.4375})


@pytest.mark.parametrize("step,expected", [(3, False), (4, True), (6, True), (7, False),
                                           (10, True)])
def test_sync_points(step: int, expected: bool) -> None:
    cfg = TrainConfig(log_every=4, checkpoint_every=6)
    assert is_sync_point(cfg, step, total=10) == expected


def test_a_non_finite_weight_on_another_rank_stops_every_rank_at_that_sync_point(
        tmp_path, monkeypatch, small_steps, fake_two_ranks):
    """The other rank's weight flags travel in the same all-reduce: at the 2nd sync point
    (step 6) it reports its last parameter non-finite, and this (finite) rank stops there too,
    with no checkpoint written after step 6's check."""
    from alexnet_dali.model.checkpoint import list_checkpoints
    from alexnet_dali.errors import TrainingDiverged

    calls = {"n": 0}
    twice = distributed.all_reduce

    def other_rank_diverges(tensor, op="sum"):
        calls["n"] += 1
        out = twice(tensor, op)
        if calls["n"] == 2:
            out[-1] += 1.0  # the other rank's flag of the last parameter (fc bias)
        return out

    monkeypatch.setattr(distributed, "all_reduce", other_rank_diverges)
    cfg = tiny_config(tmp_path, checkpoint_every=4, log_every=6)
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1, step 6 of 12 "
                       r"\(global step 6\): 1 of 2 parameters hold NaN or infinity \(first: "
                       r"2\.bias\)\. .*--resume .*ckpt-0000-0000004\.pt \(exit status 3\)$"):
        trainer.train(cfg)
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["ckpt-0000-0000004.pt"]
    assert [r["step"] for r in train_lines(cfg)] == [4, 6]


def test_a_signal_meeting_a_non_finite_loss_saves_nothing(tmp_path, monkeypatch, small_steps):
    """Alone, a signal stops after the step; if that step's loss is nan the run reports the
    divergence instead of saving the signal's checkpoint."""
    from alexnet_dali.model.checkpoint import list_checkpoints
    from alexnet_dali.errors import TrainingDiverged

    signal_at_batch(monkeypatch, 3)
    real_batch = SyntheticTrainLoader.batch_at

    def poisoned(self, step):
        images, labels = real_batch(self, step)
        return (images * float("nan"), labels) if step == 2 else (images, labels)

    monkeypatch.setattr(SyntheticTrainLoader, "batch_at", poisoned)
    cfg = tiny_config(tmp_path)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3 of 12 .*the train loss is nan"):
        trainer.train(cfg)
    assert list_checkpoints(cfg.run_dir) == []


def test_damage_found_on_another_rank_stops_every_rank_at_that_sync_point(
        tmp_path, monkeypatch, small_steps, fake_two_ranks):
    """The gates' (must stop, held back) counts travel in the same all-reduce: at the 2nd sync
    point the other rank reports a damaged sample; this rank saves with it and raises too."""
    from alexnet_dali.model.checkpoint import list_checkpoints
    from alexnet_dali.errors import CorruptSampleError

    calls = {"n": 0}
    twice = distributed.all_reduce

    def other_rank_finds_damage(tensor, op="sum"):
        calls["n"] += 1
        out = twice(tensor, op)
        if calls["n"] == 2:
            out[3] += 1.0  # (loss, correct, stop, must stop, held back, *weight flags)
        return out

    monkeypatch.setattr(distributed, "all_reduce", other_rank_finds_damage)
    cfg = tiny_config(tmp_path)
    with pytest.raises(CorruptSampleError, match=r"^a damaged shard on another rank\. It was "
                       r"held back from every step; the run stopped at epoch 1, step 8 \(global "
                       r"step 8\); saved .*ckpt-0000-0000008\.pt: "):
        trainer.train(cfg)
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["ckpt-0000-0000008.pt"]
