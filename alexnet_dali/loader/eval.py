"""The evaluation loader of one rank: every rank yields the same number of batches, ceil(largest
rank share / batch size); the `valid` mask is False for padding, so each sample counts exactly
once across ranks. Center crop, or the ten views of pipelines/eval.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import torch

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.loader.data import ShardData, open_shards
from alexnet_dali.loader.handoff import to_torch
from alexnet_dali.loader.integrity import SampleGate, build_gate
from alexnet_dali.loader.pipeline import (
    build_pipeline,
    check_epoch_size,
    pipeline_args,
    pipeline_spec,
    run_pipeline,
)
from alexnet_dali.loader.transfer import host_to_device
from alexnet_dali.pipelines.eval import eval_pipeline
from alexnet_dali.pipelines.spec import PipelineSpec


def shard_sizes(samples: int, world_size: int) -> list[int]:
    """Samples per rank as DALI's readers split them: [floor(r·N/W), floor((r+1)·N/W))."""
    return [(r + 1) * samples // world_size - r * samples // world_size
            for r in range(world_size)]


class EvalLoader:
    """One rank's evaluation batches: (images, labels int64 N, valid bool N) on `device`;
    `valid` is False for padding and for the samples the `gate` holds back (loader/integrity.py)."""

    def __init__(self, pipe, spec: PipelineSpec, loader: LoaderConfig, batch_size: int,
                 device: torch.device, gate: SampleGate | None = None) -> None:
        self._pipe, self._spec, self._loader, self._device = pipe, spec, loader, device
        self.gate = gate
        self.batch_size = batch = batch_size
        sizes = shard_sizes(spec.shards.samples, spec.num_shards)
        self.rank_samples = sizes[spec.shard_id]
        self._own_steps = -(-self.rank_samples // batch)
        self._unread = 0  # batches of the reader's pass left by a consumer that stopped early
        self.steps = -(-max(sizes) // batch)  # equal on every rank

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """One pass over this rank's share; ranks with a shorter share end on masked batches."""
        for _ in range(self._unread):  # realign the reader with the start of its shard
            run_pipeline(self._pipe, self._spec)
        self._unread = self._own_steps
        batch = self.batch_size
        images = labels = None
        for step in range(self.steps):
            if step < self._own_steps:
                self._unread -= 1
                outputs = run_pipeline(self._pipe, self._spec)
                real = min(batch, self.rank_samples - step * batch)  # the rest pads
                held = self.gate.held_back(outputs[1], real) if self.gate else ()
                images, labels = to_torch(outputs[:2], self._loader, self._device)
                index = torch.arange(step * batch, (step + 1) * batch)
                valid = index < self.rank_samples
                valid[list(held)] = False
                valid = host_to_device(valid, self._device)
            else:  # a whole batch of padding: reuse the last one, all masked out
                valid = torch.zeros(batch, dtype=torch.bool, device=self._device)
            yield images, labels, valid

    def run_with_draws(self) -> list[torch.Tensor]:
        """One batch with all pipeline outputs (test mode: the decoded images too)."""
        return to_torch(run_pipeline(self._pipe, self._spec), self._loader, self._device)


def build_eval_loader(
    data: str | Path | ShardData, *, split: str = "val", loader: LoaderConfig,
    augment: AugmentConfig, batch_size: int, rank: int, world_size: int, device: torch.device,
    tencrop: bool = False, return_draws: bool = False,
) -> EvalLoader:
    """The evaluation loader of one rank, `batch_size` samples a batch: center crop, or ten views
    (N×10×3×H×W) with tencrop."""
    data = open_shards(data)
    spec = pipeline_spec(data, split, loader=loader, augment=augment, rank=rank,
                         world_size=world_size, device=device, return_draws=return_draws,
                         training=False)
    spec = replace(spec, shuffle_buffer=1)
    gate = build_gate(data.manifest, split, rank, world_size, False, loader.shard_check)
    pipe = build_pipeline(eval_pipeline(spec, tencrop=tencrop,
                                        **pipeline_args(spec, loader, batch_size, device, 0)),
                          spec)
    check_epoch_size(pipe, spec)
    return EvalLoader(pipe, spec, loader, batch_size, device, gate)
