"""The training loader of one rank: every rank yields the same `steps_per_epoch` =
floor(samples / (world_size · batch_size)) batches; the remainder is *dropped* from the epoch
(not from the data: the reader streams on, so those samples open the next epoch). Rank r reads
DALI shard r of world_size (global rank, never the local one). Its position is a DALI checkpoint
plus the step within the epoch: passing it back resumes exactly."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterator

import torch

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.errors import CheckpointError, ConfigError
from alexnet_dali.loader.data import ShardData, open_shards
from alexnet_dali.loader.handoff import to_torch
from alexnet_dali.loader.integrity import SampleGate, build_gate
from alexnet_dali.loader.pipeline import (
    build_pipeline,
    check_epoch_size,
    pipeline_args,
    pipeline_spec,
    rank_seed,
    run_pipeline,
)
from alexnet_dali.pipelines.spec import PipelineSpec
from alexnet_dali.pipelines.train import train_pipeline

# 2: the lean train graph. DALI restores a checkpoint only into the graph that wrote it (it
# names operators by their position), so a 1 cannot be restored and is refused by name.
CHECKPOINT_FORMAT = "alexnet-dali-loader-2"


class TrainLoader:
    """One rank's training batches: (images N×3×H×W float, labels N int64) on `device`; a
    sample the `gate` holds back (a damaged shard's: loader/integrity.py) has label HELD_BACK."""

    def __init__(self, pipe, spec: PipelineSpec, loader: LoaderConfig, device: torch.device,
                 steps_per_epoch: int, step: int = 0, gate: SampleGate | None = None) -> None:
        self._pipe, self._spec, self._loader, self._device = pipe, spec, loader, device
        self.steps_per_epoch = steps_per_epoch
        self.step_in_epoch = step  # batches yielded in the current epoch
        self.gate = gate

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The rest of the current epoch (a full one if the last epoch was finished)."""
        if self.step_in_epoch >= self.steps_per_epoch:
            self.step_in_epoch = 0
        while self.step_in_epoch < self.steps_per_epoch:
            outputs = run_pipeline(self._pipe, self._spec)
            held = self.gate.held_back(outputs[1]) if self.gate else ()
            images, labels = to_torch(outputs[:2], self._loader, self._device, held)
            self.step_in_epoch += 1
            yield images, labels

    def run_with_draws(self) -> list[torch.Tensor]:
        """One batch with all pipeline outputs (test mode: the draws too); counts as a step."""
        self.step_in_epoch += 1
        return to_torch(run_pipeline(self._pipe, self._spec), self._loader, self._device)

    def checkpoint(self) -> str:
        """The DALI pipeline checkpoint after the last yielded batch, plus the epoch position."""
        blob = self._pipe.checkpoint()
        return json.dumps({
            "format": CHECKPOINT_FORMAT, "dali": base64.b64encode(blob).decode("ascii"),
            "step_in_epoch": self.step_in_epoch, "steps_per_epoch": self.steps_per_epoch,
            "shard_id": self._spec.shard_id, "num_shards": self._spec.num_shards,
        })


def _parse_checkpoint(checkpoint: bytes | str, spec: PipelineSpec,
                      steps: int) -> tuple[bytes, int]:
    text = checkpoint.decode() if isinstance(checkpoint, bytes) else checkpoint
    try:
        state = json.loads(text)
        found_format = state["format"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError("loader checkpoint: not a TrainLoader.checkpoint() string; "
                              "resume from a checkpoint `alexnet-dali train` wrote") from None
    if found_format != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"loader checkpoint: format {found_format!r} comes from another version of the train "
            f"graph (this one writes {CHECKPOINT_FORMAT!r}) and DALI cannot restore it; resume "
            "from a checkpoint this version wrote")
    expected = (spec.shard_id, spec.num_shards, steps)
    found = (state["shard_id"], state["num_shards"], state["steps_per_epoch"])
    if found != expected:
        raise CheckpointError(
            f"loader checkpoint is for (rank, world size, steps/epoch) {found}, this run has "
            f"{expected}; resume with the same data, ranks and batch")
    return base64.b64decode(state["dali"]), int(state["step_in_epoch"])


def build_train_loader(
    data: str | Path | ShardData, *, loader: LoaderConfig, augment: AugmentConfig, batch_size: int,
    rank: int, world_size: int, device: torch.device, seed: int,
    checkpoint: bytes | str | None = None, return_draws: bool = False,
) -> TrainLoader:
    """The training loader of one rank, `batch_size` samples a batch (the per-rank batch);
    `checkpoint` (from TrainLoader.checkpoint) resumes."""
    data = open_shards(data)
    spec = pipeline_spec(data, "train", loader=loader, augment=augment, rank=rank,
                         world_size=world_size, device=device, return_draws=return_draws)
    steps = spec.shards.samples // (world_size * batch_size)
    if steps == 0:
        raise ConfigError(f"{data}: {spec.shards.samples} training samples are fewer than one "
                          f"global batch ({world_size} ranks × {batch_size}); lower it")
    blob, step = (None, 0) if checkpoint is None else _parse_checkpoint(checkpoint, spec, steps)
    gate = build_gate(data.manifest, "train", rank, world_size, True, loader.shard_check)
    pipe = build_pipeline(train_pipeline(spec, checkpoint=blob, **pipeline_args(
        spec, loader, batch_size, device, rank_seed(seed, rank))), spec)
    check_epoch_size(pipe, spec)
    return TrainLoader(pipe, spec, loader, device, steps, step, gate)
