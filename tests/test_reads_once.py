"""DATA is read once: a training start, an eval and a predict each parse manifest.json once and
pca.json (and the mean image) at most once (loader/data.py), however many splits, loaders, gates
and checks use them. Counted at the store, where every reader gets its bytes."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig, ModelConfig, TrainConfig
from alexnet_dali.tools.storage import LocalStore
from alexnet_dali.train.loop import train
from alexnet_dali.use.evaluate import evaluate_checkpoint
from alexnet_dali.use.inference import load_for_inference

pytestmark = pytest.mark.slow
DATA_FILES = ("manifest.json", "pca.json", "mean_image.npy")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> collections.Counter:
    """The reads of each of DATA's own files through its store, counted."""
    counts: collections.Counter = collections.Counter()
    read_bytes = LocalStore.read_bytes

    def counted(self: LocalStore, rel: str) -> bytes:
        counts[rel] += 1
        return read_bytes(self, rel)

    monkeypatch.setattr(LocalStore, "read_bytes", counted)
    return counts


def of_data(counts: collections.Counter) -> dict[str, int]:
    return {name: counts[name] for name in DATA_FILES if counts[name]}


def test_a_training_start_an_eval_and_a_predict_read_the_data_once(shard_dataset: Path,
                                                                   tmp_path: Path, reads) -> None:
    run_dir = tmp_path / "run"
    cfg = TrainConfig(data=str(shard_dataset), run_dir=str(run_dir), epochs=1, batch_size=8,
                      device="cpu", max_steps_per_epoch=1, threads=1, log_every=1,
                      tensorboard=False, model=ModelConfig(fc_width=8),
                      loader=LoaderConfig(num_threads=1, shuffle_buffer=8),
                      augment=AugmentConfig(mean="image"))
    train(cfg)
    # train and val loaders, their shard gates, the start check, the checkpoint's facts
    assert of_data(reads) == {"manifest.json": 1, "pca.json": 1, "mean_image.npy": 1}
    reads.clear()
    evaluate_checkpoint(str(shard_dataset), str(run_dir), device="cpu", batch_size=16,
                        per_class=True)
    assert of_data(reads) == {"manifest.json": 1, "pca.json": 1, "mean_image.npy": 1}
    reads.clear()
    load_for_inference(run_dir, str(shard_dataset))  # the checkpoint records the statistics
    assert of_data(reads) == {"manifest.json": 1}
