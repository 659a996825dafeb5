"""A JPEG damaged inside a shard is never trained on or scored in silence (loader/integrity.py): the
shard's sha256 is checked as it is first read, off the training thread; the damaged sample is held
back; train and eval stop naming the shard, the key and `verify --decode`, or with
--skip-bad-samples leave it out and count it."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from alexnet_dali.loader import integrity
from alexnet_dali.model.checkpoint import list_checkpoints
from alexnet_dali.cli import main
from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.loader.train import build_train_loader
from alexnet_dali.tools.manifest import read_manifest
from alexnet_dali.tools.shards import read_index
from alexnet_dali.tools.storage import LocalStore
from alexnet_dali.tools.verify import ShardCheck

CORRUPT = "Corrupt JPEG data: premature end of data segment"


def damaged_copy(shard_dataset: Path, out: Path, split: str, shard: int,
                 sample: int) -> tuple[Path, str, str]:
    """A copy of the shards with 64 bytes in the middle of one JPEG's data overwritten (sizes,
    header and tar intact, the way a bad copy or disk damages a file); (root, tar, key)."""
    shutil.copytree(shard_dataset, out)
    tar = out / split / f"{split}-{shard:06d}.tar"
    entry = read_index(tar.with_suffix(".idx"))[sample]["jpg"]
    data = bytearray(tar.read_bytes())
    middle = entry.offset + entry.size // 2
    data[middle:middle + 64] = b"\xff\xd9" * 32
    tar.write_bytes(bytes(data))
    return out, str(tar), entry.name.partition(".")[0]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


TAIL = ("`alexnet-dali verify --decode {root}` lists every damaged sample; rebuild a damaged "
        "shard (delete its .tar/.idx/.json and re-run `alexnet-dali preprocess` with the same "
        "options, or copy it again)")


@pytest.mark.slow
def test_train_stops_on_a_damaged_sample_then_skips_it_on_request(shard_dataset, tmp_path):
    root, tar, key = damaged_copy(shard_dataset, tmp_path / "shards", "train", 1, 5)
    run_dir = tmp_path / "run"
    common = ["train", str(root), "--run-dir", str(run_dir), "--device", "cpu", "--threads",
              "2", "--workers", "1", "--batch-size", "32", "--epochs", "2",
              "--keep-checkpoints", "1", "--set", "model.fc_width=64"]  # small checkpoints
    stopped = CliRunner().invoke(main, common)
    assert stopped.exit_code == 2, stopped.output
    (line,) = error_lines(stopped)
    (ckpt,) = list_checkpoints(run_dir)
    head = f"error: {tar}: sample {key}: JPEG does not decode cleanly ({CORRUPT}). "
    assert line.startswith(head), line
    assert line.endswith(f"; saved {ckpt}: once the shard is rebuilt continue with --resume, "
                         "or --resume --skip-bad-samples to leave such samples out. "
                         + TAIL.format(root=root)), line
    assert "It was held back from every step; the run stopped at epoch " in line

    skipped = CliRunner().invoke(main, [*common, "--resume", "--skip-bad-samples"])
    assert skipped.exit_code == 0, skipped.output
    assert "resuming with changed settings: loader.shard_check \"stop\" -> \"skip\"" in \
        skipped.stdout
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    counted = [r for r in records if r["kind"] == "skipped"]
    assert counted and all(r["val"] == 0 for r in counted)
    total = sum(r["train"] for r in counted)
    assert total >= 1
    assert (f"left out damaged samples (--skip-bad-samples): {total} train and 0 val sample "
            f"reads, e.g. {tar}: sample {key}: JPEG does not decode cleanly") in skipped.stdout


@pytest.mark.slow
def test_eval_stops_on_a_damaged_sample_or_leaves_it_out(shard_dataset, tmp_path):
    from alexnet_dali.model.checkpoint import new_state, save_checkpoint
    from alexnet_dali.config.schema import ModelConfig, TrainConfig
    from alexnet_dali.model.alexnet import build_model

    root, tar, key = damaged_copy(shard_dataset, tmp_path / "shards", "train", 2, 9)
    cfg = TrainConfig(data=str(shard_dataset), model=ModelConfig(num_classes=4))
    ckpt = save_checkpoint(tmp_path / "run", new_state(
        model=build_model(cfg.model).state_dict(), config=cfg, epoch=1, global_step=1),
        keep=1)
    common = ["eval", str(root), "--split", "train", "--checkpoint", str(ckpt), "--device",
              "cpu", "--batch-size", "32"]
    stopped = CliRunner().invoke(main, common)
    assert stopped.exit_code == 2, stopped.output
    assert error_lines(stopped) == [
        f"error: {tar}: sample {key}: JPEG does not decode cleanly ({CORRUPT}). eval stops "
        "without a result (pass --skip-bad-samples to score the split without such samples). "
        + TAIL.format(root=root)]
    assert "top-1 err" not in stopped.stdout
    out = tmp_path / "eval.json"
    skipped = CliRunner().invoke(main, [*common, "--skip-bad-samples", "--json", str(out)])
    assert skipped.exit_code == 0, skipped.output
    assert (f"left out 1 damaged samples of train (not scored; --skip-bad-samples); "
            f"`alexnet-dali verify --decode {root}` lists them") in skipped.stdout
    result = json.loads(out.read_text())
    assert result["samples"] == 95 and result["skipped"] == 1


def test_an_intact_copy_is_judged_clean_and_the_gate_then_costs_nothing(shard_dataset):
    gate = integrity.build_gate(shard_dataset, "train", 0, 1, True, "stop")
    loader = build_train_loader(shard_dataset, loader=LoaderConfig(num_threads=1),
                                augment=AugmentConfig(), batch_size=32, rank=0, world_size=1,
                                device=torch.device("cpu"), seed=0)
    loader.gate = gate
    for _, labels in loader:
        assert (labels >= 0).all()  # nothing held back
    gate.watcher.wait_all()
    assert gate.watcher.finished and all(v.ok for v in gate.watcher.verdicts.values())
    assert gate.held_back(None) == [] and gate._all_clean  # no per-sample look-up any more
    assert not gate.must_stop and gate.problems() == []


def test_a_changed_shard_whose_samples_all_decode_stops_even_when_skipping(shard_dataset,
                                                                           tmp_path):
    """A label changed within the class range: the sha256 differs, the strict decode finds
    nothing, so no sample can be named and the gate says stop in both modes."""
    root = tmp_path / "shards"
    shutil.copytree(shard_dataset, root)
    tar = root / "train" / "train-000003.tar"
    cls = read_index(tar.with_suffix(".idx"))[4]["cls"]
    data = bytearray(tar.read_bytes())
    label = int(data[cls.offset:cls.offset + cls.size])
    data[cls.offset:cls.offset + cls.size] = f"{(label + 1) % 4:06d}".encode()
    tar.write_bytes(bytes(data))
    manifest = read_manifest(root)
    entry = manifest.split("train").shards[3]
    verdict = integrity.judge(ShardCheck(LocalStore(root), entry.tar, entry.index,
                                         entry.samples, entry.sha256, entry.size, 4,
                                         decode=True))
    assert verdict.fatal == ("its sha256 differs from manifest.json, but every sample decodes "
                             "cleanly, so the changed samples cannot be named")
    for mode in ("stop", "skip"):
        gate = integrity.build_gate(root, "train", 0, 1, True, mode)
        digits = FakeBatch([f"{tar}:{cls.offset}:{cls.name}", f"{root}/train/train-000000.tar:"
                            "512:000000000.cls"])
        assert gate.held_back(digits) == [0]
        assert gate.must_stop
        assert gate.problems() == [f"{tar}: {verdict.fatal}"]


class FakeSample:
    def __init__(self, info: str) -> None:
        self.info = info

    def source_info(self) -> str:
        return self.info


class FakeBatch(list):
    """A stand-in for a DALI TensorList: samples with `source_info()`."""

    def __init__(self, infos: list[str]) -> None:
        super().__init__(FakeSample(i) for i in infos)


@pytest.mark.parametrize("world,expected", [
    (1, {0: [[0, 1, 2, 3, 4, 5]]}),
    (2, {0: [[0, 1, 2], [3, 4, 5]], 1: [[3, 4, 5], [0, 1, 2]]}),
    (4, {0: [[0, 1], [1, 2], [3, 4], [4, 5]], 3: [[4, 5], [0, 1], [1, 2], [3, 4]]}),
])
def test_reading_ranges_follow_the_reader_shards(world, expected):
    """6 files of 16 samples; reader shard s holds samples [s·96/W, (s+1)·96/W)."""
    for rank, ranges in expected.items():
        assert integrity.reading_ranges([16] * 6, rank, world, training=True) == ranges
        assert integrity.reading_ranges([16] * 6, rank, world, training=False) == ranges[:1]


def test_dali_reads_its_own_reader_shard_then_the_next_one(shard_dataset):
    """Without shuffling, rank 0 of 2 reads files 0-2 in epoch 1 and 3-5 in epoch 2: the order
    `reading_ranges` hashes them in (checked on DALI's own sample names)."""
    seen: list[list[str]] = []

    class Spy:
        def held_back(self, digits, count=None):
            seen.append(sorted({integrity.sample_of(d.source_info())[0] for d in digits}))
            return []

    loader = build_train_loader(shard_dataset, loader=LoaderConfig(num_threads=1,
                                                                   shuffle_buffer=1,
                                                                   shard_check="off"),
                                augment=AugmentConfig(), batch_size=16, rank=0, world_size=2,
                                device=torch.device("cpu"), seed=0)
    loader.gate = Spy()
    for _ in range(2):
        list(loader)
    names = [Path(t).stem for batch in seen for t in batch]
    files = [f"train-{i:06d}" for i in range(6)]
    ranges = integrity.reading_ranges([16] * 6, 0, 2, training=True)
    assert names == [files[i] for r in ranges for i in r]


def test_the_watcher_hashes_the_next_range_only_when_a_batch_asks_for_it(monkeypatch, tmp_path):
    judged: list[str] = []
    release = threading.Event()

    def judge(check):
        judged.append(check.tar)
        return integrity.CLEAN

    monkeypatch.setattr(integrity, "judge", judge)
    store = LocalStore(tmp_path)
    checks = [ShardCheck(store, f"{i}.tar", None, 1, "x", 1, 4, True) for i in range(4)]
    watcher = integrity.ShardWatcher(checks, [[0, 1], [1, 2, 3]])
    assert watcher.verdict(str(tmp_path / "1.tar")).ok
    release.wait(0.2)
    assert judged == ["0.tar", "1.tar"] and not watcher.finished
    assert watcher.verdict(str(tmp_path / "3.tar")).ok  # a batch from the next range
    assert judged == ["0.tar", "1.tar", "2.tar", "3.tar"] and watcher.finished
    assert watcher.verdict("elsewhere.tar").fatal == ("is not a shard of this split in "
                                                      "manifest.json")
