"""Host → GPU copies without a host sync, checked without a GPU: every host tensor bound for a
CUDA device is pinned and copied with non_blocking=True (torch.Tensor.pin_memory is patched to
record the copy it is asked for and hand back the host tensor, so the rest runs on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import write_dataset

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.loader.train import build_train_loader
from alexnet_dali.loader.transfer import host_to_device
from alexnet_dali.loader.synthetic import SyntheticEvalLoader, SyntheticTrainLoader

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


class PinnedCopies:
    """Stands in for pinned memory: records (shape, dtype, to() arguments) of each copy."""

    def __init__(self) -> None:
        self.copies: list[tuple[tuple[int, ...], torch.dtype, tuple, dict]] = []

    def pin(self, tensor: torch.Tensor):
        copies = self.copies

        class Pinned:
            def to(self, *args, **kwargs) -> torch.Tensor:
                copies.append((tuple(tensor.shape), tensor.dtype, args, kwargs))
                return tensor

        return Pinned()


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> PinnedCopies:
    recorder = PinnedCopies()
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: recorder.pin(self))
    return recorder


def assert_all_non_blocking(pinned: PinnedCopies) -> None:
    assert pinned.copies
    for shape, dtype, args, kwargs in pinned.copies:
        assert args == (CUDA,) and kwargs == {"non_blocking": True}, (shape, dtype)


def test_host_to_device_is_pinned_and_non_blocking_for_cuda(pinned: PinnedCopies) -> None:
    x = torch.arange(6.0)
    assert host_to_device(x, CUDA) is x  # the fake pinned buffer hands the host tensor back
    assert pinned.copies == [((6,), torch.float32, (CUDA,), {"non_blocking": True})]


def test_host_to_device_on_the_cpu_is_the_tensor_itself(pinned: PinnedCopies) -> None:
    x = torch.arange(6.0)
    assert host_to_device(x, CPU) is x
    assert pinned.copies == []  # no pinning, no copy


def test_cpu_graph_feeding_a_cuda_model_copies_pinned_non_blocking(
        tmp_path: Path, pinned: PinnedCopies) -> None:
    """loader.device = "cpu" with a CUDA model: images, labels and draws each go pinned."""
    data = write_dataset(tmp_path, {"train": 8, "val": 2}, per_shard=8)
    loader = LoaderConfig(num_threads=1, device="cpu", shuffle_buffer=4, dtype="bfloat16")
    tl = build_train_loader(data, loader=loader, augment=AugmentConfig(), batch_size=4, rank=0,
                            world_size=1, device=CUDA, seed=0, return_draws=True)
    images, labels = next(iter(tl))
    assert images.dtype == torch.bfloat16 and labels.dtype == torch.int64
    assert [c[:2] for c in pinned.copies] == [((4, 3, 224, 224), torch.float32),
                                             ((4,), torch.int64)]  # cast after the copy
    outputs = tl.run_with_draws()
    assert len(pinned.copies) == 2 + len(outputs)
    assert_all_non_blocking(pinned)


def test_synthetic_loaders_copy_pinned_non_blocking_and_yield_the_same(
        pinned: PinnedCopies) -> None:
    args = dict(batch_size=4, steps_per_epoch=2, num_classes=3, seed=5, dtype="float16",
                size=32)
    on_cpu = list(SyntheticTrainLoader(device="cpu", **args))
    assert pinned.copies == []
    for (x, y), (xc, yc) in zip(SyntheticTrainLoader(device=CUDA, **args), on_cpu):
        assert torch.equal(x, xc) and torch.equal(y, yc) and x.dtype == torch.float16
    assert [c[1] for c in pinned.copies] == [torch.float32, torch.int64] * 2
    del pinned.copies[:]
    eval_args = dict(samples=6, batch_size=4, num_classes=3, size=32)
    for got, want in zip(SyntheticEvalLoader(device=CUDA, **eval_args),
                         SyntheticEvalLoader(device="cpu", **eval_args)):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert len(pinned.copies) == 3 * 2
    assert_all_non_blocking(pinned)
