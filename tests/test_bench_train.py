"""`bench train`'s timing: the sources take turns, so both see the same background load."""

from __future__ import annotations

import torch

from alexnet_dali.bench.train import ROUNDS, time_sources
from alexnet_dali.train.steps import StepOutput


class RecordingStep:
    """Stands in for TrainStep: records which source each step's batch came from."""

    input_device = torch.device("cpu")

    def __init__(self) -> None:
        self.sources: list[str] = []

    def __call__(self, images: torch.Tensor, labels: list[str]) -> StepOutput:
        self.sources.append(labels[0])
        return StepOutput(torch.zeros(()), torch.zeros((), dtype=torch.long))


def batches(name: str):
    while True:
        yield torch.zeros(2, 1), [name]


def test_sources_take_turns_in_rounds_every_other_one_reversed() -> None:
    step = RecordingStep()
    rates = time_sources(step, {"synthetic": batches("synthetic"), "dali": batches("dali")},
                         steps=7, warmup=1)
    assert ROUNDS == 3
    s, d = "synthetic", "dali"
    assert step.sources == [s, d] + [s] * 2 + [d] * 2 + [d] * 2 + [s] * 2 + [s] * 3 + [d] * 3
    assert set(rates) == {s, d} and all(rate > 0 for rate in rates.values())


def test_fewer_steps_than_rounds_and_one_source() -> None:
    step = RecordingStep()
    time_sources(step, {"synthetic": batches("synthetic")}, steps=1, warmup=0)
    assert step.sources == ["synthetic"]
