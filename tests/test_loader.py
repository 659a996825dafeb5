"""The DALI → torch loaders: determinism, exact resume, 2 simulated ranks, errors (CPU)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import label_of, write_dataset

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.errors import CheckpointError, ConfigError, CorruptSampleError, DataError
from alexnet_dali.loader.eval import build_eval_loader, shard_sizes
from alexnet_dali.loader.train import build_train_loader

CPU = torch.device("cpu")
LOADER = LoaderConfig(num_threads=1, prefetch=2, shuffle_buffer=8)
BATCH = 4
AUG = AugmentConfig()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("loader"), {"train": 21, "val": 15}, per_shard=6)


def train(data: Path, **kwargs):
    args = dict(loader=LOADER, augment=AUG, batch_size=BATCH, rank=0, world_size=1, device=CPU,
                seed=0)
    return build_train_loader(data, **{**args, **kwargs})


def batches(loader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n batches, crossing epoch ends (a new epoch starts when one is exhausted)."""
    out: list = []
    while len(out) < n:
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                break
    return out


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_same_seed_same_batches(data: Path) -> None:
    first, again, other = (batches(train(data, seed=s), 6) for s in (7, 7, 8))
    assert_same(first, again)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))


def test_batches_do_not_depend_on_threads_or_prefetch(data: Path) -> None:
    one = batches(train(data, seed=4), 3)
    two = batches(train(data, seed=4, loader=replace(LOADER, num_threads=2, prefetch=3)), 3)
    assert_same(one, two)


def test_epoch_length_and_shapes(data: Path) -> None:
    loader = train(data)
    assert loader.steps_per_epoch == len(loader) == 21 // 4
    epoch = list(loader)
    assert len(epoch) == 5 and len(list(loader)) == 5  # a second epoch, same length
    images, labels = epoch[0]
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    seen = torch.cat([y for _, y in epoch]).tolist()
    assert set(seen) <= {label_of(i) for i in range(21)}


@pytest.mark.parametrize("consumed", [1, 4, 5, 7])  # mid-epoch, last step, epoch end, epoch 2
def test_restored_loader_continues_exactly(data: Path, consumed: int) -> None:
    """A loader rebuilt from checkpoint() yields what the uninterrupted one yields next."""
    loader = train(data, seed=11)
    done = batches(loader, consumed)
    state = loader.checkpoint()
    assert json.loads(state)["step_in_epoch"] == (consumed - 1) % 5 + 1
    expected = batches(loader, 6)
    restored = train(data, seed=11, checkpoint=state)
    assert restored.step_in_epoch == (consumed - 1) % 5 + 1
    assert_same(batches(restored, 6), expected)
    assert not torch.equal(done[-1][0], expected[0][0])


def test_checkpoint_from_other_setup_is_refused(data: Path) -> None:
    state = train(data).checkpoint()
    with pytest.raises(CheckpointError, match="world size"):
        train(data, batch_size=2, checkpoint=state)
    with pytest.raises(CheckpointError, match="not a TrainLoader"):
        train(data, checkpoint="{}")
    older = json.dumps({**json.loads(state), "format": "alexnet-dali-loader-1"})
    with pytest.raises(CheckpointError, match="'alexnet-dali-loader-1' comes from another"):
        train(data, checkpoint=older)


def test_two_ranks_train_equal_steps_disjoint_shards(data: Path) -> None:
    """Rank r reads DALI shard r: equal step counts; first-epoch samples do not overlap."""
    loaders = [train(data, rank=r, world_size=2, batch_size=2)
               for r in range(2)]
    assert loaders[0].steps_per_epoch == loaders[1].steps_per_epoch == 21 // 4
    seen = [torch.cat([y for _, y in loader]).tolist() for loader in loaders]
    assert len(seen[0]) == len(seen[1]) == 10
    sizes = shard_sizes(21, 2)  # [10, 11]: rank 0 reads samples 0..9, rank 1 10..20
    assert set(seen[0]) <= {label_of(i) for i in range(sizes[0])}
    assert set(seen[1]) <= {label_of(i) for i in range(sizes[0], 21)}


@pytest.mark.parametrize("world_size,batch", [(2, 4), (2, 7), (3, 2)])
@pytest.mark.parametrize("tencrop", [False, True])
def test_eval_sees_every_sample_once(data: Path, world_size: int, batch: int,
                                     tencrop: bool) -> None:
    seen: list[int] = []
    steps = set()
    for rank in range(world_size):
        el = build_eval_loader(data, loader=LOADER, augment=AUG, batch_size=batch, rank=rank,
                               world_size=world_size, device=CPU, tencrop=tencrop)
        got = list(el)
        steps.add(len(got))
        assert len(got) == len(el)
        for images, labels, valid in got:
            assert valid.dtype == torch.bool and images.shape[0] == labels.shape[0] == batch
            assert images.shape[1:] == ((10, 3, 224, 224) if tencrop else (3, 224, 224))
            seen += labels[valid].tolist()
    assert len(steps) == 1  # every rank the same number of batches
    assert sorted(seen) == sorted(label_of(i) for i in range(15))


def test_eval_twice_gives_the_same_pass(data: Path) -> None:
    el = build_eval_loader(data, loader=LOADER, augment=AUG, batch_size=4, rank=1,
                           world_size=2, device=CPU)
    first = [(x, y[v]) for x, y, v in el]
    second = [(x, y[v]) for x, y, v in el]
    assert_same(first, second)
    next(iter(el))  # a consumer that stops after one batch
    assert_same([(x, y[v]) for x, y, v in el], first)


def test_corrupt_jpeg_names_shard_and_key(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "bad", {"train": 12}, per_shard=6, corrupt=("train", 8))
    loader = train(root, batch_size=3)
    with pytest.raises(CorruptSampleError, match=r"train-000001\.tar: sample '000000008'"):
        list(loader)


def test_bad_data_dirs_are_named(tmp_path: Path, data: Path) -> None:
    with pytest.raises(DataError, match="manifest.json: not found"):
        train(tmp_path)
    root = write_dataset(tmp_path / "d", {"train": 8}, per_shard=8)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"]["samples"] = 9
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="lists 9 train samples but the shards hold 8"):
        train(root)
    pca = json.loads((data / "pca.json").read_text())
    (root / "pca.json").write_text(json.dumps({**pca, "mean_image": None}))
    with pytest.raises(DataError, match="needs a mean image"):
        train(root, augment=AugmentConfig(mean="image"))
    (root / "pca.json").write_text(json.dumps({**pca, "mean_image": "mean_image.npy"}))
    (root / "mean_image.npy").unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"mean_image\.npy: cannot read the mean image"):
        train(root, augment=AugmentConfig(mean="image"))
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        train(data, batch_size=16, world_size=2)


def test_preprocessed_shards(shard_dataset: Path) -> None:
    """The DATA stage's real output (index files, pca.json, mean image) feeds both loaders."""
    tl = build_train_loader(shard_dataset, loader=LOADER, augment=AugmentConfig(mean="image"),
                            batch_size=8, rank=0, world_size=1, device=CPU, seed=0)
    labels = torch.cat([y for _, y in tl])
    assert len(labels) == 96 and set(labels.tolist()) <= {0, 1, 2, 3}
    el = build_eval_loader(shard_dataset, loader=LOADER, augment=AUG, batch_size=8, rank=0,
                           world_size=1, device=CPU)
    counts = torch.cat([y[v] for _, y, v in el]).bincount(minlength=4)
    assert counts.tolist() == [8, 8, 8, 8]


@pytest.mark.gpu
def test_gpu_mixed_decode_matches_cpu(data: Path) -> None:
    """device="mixed" decoding + GPU augmentation equals the CPU graph up to decoder rounding."""
    gpu = torch.device("cuda", 0)
    kwargs = dict(loader=LOADER, augment=AUG, batch_size=BATCH, rank=0, world_size=1)
    cpu_x, cpu_y, _ = next(iter(build_eval_loader(data, device=CPU, **kwargs)))
    gpu_x, gpu_y, _ = next(iter(build_eval_loader(data, device=gpu, **kwargs)))
    assert gpu_x.device.type == "cuda" and torch.equal(gpu_y.cpu(), cpu_y)
    assert (gpu_x.cpu() - cpu_x).abs().mean() < 2.0
    tl = build_train_loader(data, device=gpu, seed=0, **kwargs)
    images, labels = next(iter(tl))
    assert images.device.type == labels.device.type == "cuda"


def test_held_batches_stay_intact(data: Path) -> None:
    """Batches are shared with DALI without a copy: later batches must not overwrite them."""
    loader = train(data, seed=2)
    held, snapshots = [], []
    for x, y in loader:
        held.append((x, y))
        snapshots.append((x.clone(), y.clone()))
    batches(loader, 8)
    assert_same(held, snapshots)
    held[0][0].zero_()  # the consumer may write into its batch
    assert not torch.equal(held[0][0], snapshots[0][0])
