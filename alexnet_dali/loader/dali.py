"""DALI → PyTorch glue: the only module the trainer imports that touches DALI (with
`loader_handoff.py`, its hand-off of DALI outputs to torch).

Training (`build_train_loader`): every rank yields the same `steps_per_epoch` =
floor(samples / (world_size · batch_size)) batches — the remainder is *dropped* from the epoch
(not from the data: the reader streams on, so those samples open the next epoch). Evaluation
(`build_eval_loader`): every rank yields the same number of batches, ceil(largest rank share /
batch size); the `valid` mask is False for padding, so each sample counts exactly once across
ranks. Rank r reads DALI shard r of world_size (global rank, never the local one).
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.errors import CheckpointError, ConfigError, CorruptSampleError, DataError
from alexnet_dali.loader.integrity import SampleGate, build_gate
from alexnet_dali.loader.handoff import host_to_device, to_torch
from alexnet_dali.pipelines.eval import eval_pipeline
from alexnet_dali.pipelines.readers import READER_NAME
from alexnet_dali.pipelines.spec import PipelineSpec, load_shard_set, needs_colour_stats
from alexnet_dali.pipelines.train import train_pipeline
from alexnet_dali.tools.pca import load_colour_stats
from alexnet_dali.tools.shards import iter_shard
from alexnet_dali.tools.storage import StorageError, is_remote

# 2: the lean train graph. DALI restores a checkpoint only into the graph that wrote it (it
# names operators by their position), so a 1 cannot be restored and is refused by name.
CHECKPOINT_FORMAT = "alexnet-dali-loader-2"


def pipeline_spec(
    data_dir: str | Path, split: str, *, loader: LoaderConfig, augment: AugmentConfig,
    rank: int, world_size: int, device: torch.device, return_draws: bool = False,
    training: bool = True,
) -> PipelineSpec:
    """The PipelineSpec of one rank: shard_id = global rank, num_shards = world size."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    shards = load_shard_set(data_dir, split)
    if shards.samples < world_size:
        raise DataError(f"{data_dir}: split {split!r} has {shards.samples} samples, "
                         f"fewer than the {world_size} ranks")
    pipe_device = pipeline_device(loader, device)
    return PipelineSpec(
        shards=shards,
        stats=load_colour_stats(data_dir, need_mean_image=augment.mean == "image")
        if needs_colour_stats(augment, training) else None,
        augment=augment, shard_id=rank, num_shards=world_size,
        device=pipe_device, hw_decoder_load=loader.hw_decoder_load,
        # DALI emits float16 on the GPU; on the CPU its float16 conversion is slower than
        # torch's (measured: 1.5k vs 2.6k img/s on 2 cores), so torch casts, as for bfloat16
        dtype="float16" if loader.dtype == "float16" and pipe_device == "gpu" else "float32",
        layout="HWC" if loader.layout == "NHWC" else "CHW",
        shuffle_buffer=loader.shuffle_buffer, return_draws=return_draws,
    )


def pipeline_device(loader: LoaderConfig, device: torch.device) -> str:
    """Where the graph runs: "gpu" (mixed decode) for a CUDA device unless loader.device="cpu"."""
    if loader.device == "gpu" and device.type != "cuda":
        raise ConfigError(f"loader.device = 'gpu' needs a CUDA torch device, got {device}; "
                         "set loader.device = 'cpu' or 'auto'")
    if loader.device == "cpu":
        return "cpu"
    return "gpu" if device.type == "cuda" else "cpu"


def pipeline_args(spec: PipelineSpec, loader: LoaderConfig, batch_size: int,
                  device: torch.device, seed: int) -> dict:
    """The `Pipeline` arguments every loader graph runs with (threads, prefetch, executor)."""
    device_id = None
    if spec.device == "gpu":
        device_id = device.index if device.index is not None else torch.cuda.current_device()
    return dict(batch_size=batch_size, num_threads=loader.num_threads,
                device_id=device_id, seed=seed, prefetch_queue_depth=loader.prefetch,
                exec_dynamic=True)


def rank_seed(seed: int, rank: int) -> int:
    """A distinct, reproducible 31-bit DALI seed per (run seed, rank)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0] & 0x7FFFFFFF)


def shard_sizes(samples: int, world_size: int) -> list[int]:
    """Samples per rank as DALI's readers split them: [floor(r·N/W), floor((r+1)·N/W))."""
    return [(r + 1) * samples // world_size - r * samples // world_size
            for r in range(world_size)]


def find_corrupt_jpeg(tars: tuple[str, ...]) -> tuple[str, str, str] | None:
    """(shard, key, reason) of the first JPEG that Pillow cannot decode, or None."""
    from PIL import Image
    from tqdm import tqdm

    for tar_path in tqdm(tars, desc="looking for the undecodable JPEG", unit="shard"):
        for key, members in iter_shard(tar_path):
            try:
                with Image.open(io.BytesIO(members["jpg"])) as im:
                    im.load()
            except Exception as e:  # noqa: BLE001 - any decode failure is the answer
                return tar_path, key, repr(e)
    return None


# DALI's words when an .idx points past the end of its tar: the tar is cut short, not the index
_PAST_END = re.compile(r'Malformed index file at "([^"]+)".*offset is outside of the archive')


def remote_failure(spec: PipelineSpec, error: RuntimeError) -> StorageError | None:
    """A StorageError for DALI's reader failing on `s3://` shards (the endpoint went away, the
    credentials expired), or None when the shards are local or another operator failed."""
    text = str(error)
    if not is_remote(spec.shards.tars[0]) or "readers.webdataset" not in text:
        return None
    lines = [line.strip(" :") for line in text.split("encountered:")[-1].splitlines()]
    reason = next((line for line in lines if line and "no longer valid" not in line), "")
    where = spec.shards.tars[0].rsplit("/", 2)[0]
    return StorageError(f"{where}: DALI could not read the {spec.shards.split} shards ({reason}); "
                        "check AWS_ENDPOINT_URL, the network and the credentials")


def build_pipeline(pipe, spec: PipelineSpec):
    """pipe.build(), turning a failure to reach `s3://` shards into a StorageError."""
    try:
        pipe.build()
    except RuntimeError as e:
        raise remote_failure(spec, e) or e from None
    return pipe


def run_pipeline(pipe, spec: PipelineSpec):
    """pipe.run(), turning a decoder failure into an error naming the shard and sample key, and
    a failure to read `s3://` shards into a StorageError."""
    try:
        return pipe.run()
    except RuntimeError as e:
        remote = remote_failure(spec, e)
        if remote is not None:
            raise remote from None
        past_end = _PAST_END.search(str(e))
        if past_end:
            index = Path(past_end.group(1))
            raise CorruptSampleError(
                f"{index.with_suffix('.tar')}: shorter than its index {index.name} says (cut "
                "short, e.g. by an incomplete copy); copy it again, and check every shard with "
                "`alexnet-dali verify DATA`") from None
        if "decoders.image" not in str(e):
            raise
        found = find_corrupt_jpeg(spec.shards.tars)
        where = (f"{found[0]}: sample {found[1]!r} is not a decodable JPEG ({found[2]})"
                 if found else f"a JPEG in {spec.shards.tars} could not be decoded")
        raise CorruptSampleError(
            f"{where}; DALI stops on it (it cannot skip a sample). Re-run `alexnet-dali "
            f"preprocess`, which rejects undecodable images, or rebuild that shard."
        ) from e


class TrainLoader:
    """One rank's training batches: (images N×3×H×W float, labels N int64) on `device`; a
    sample the `gate` holds back (a damaged shard's: loader_integrity.py) has label HELD_BACK."""

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
    data_dir: str | Path, *, loader: LoaderConfig, augment: AugmentConfig, batch_size: int,
    rank: int, world_size: int, device: torch.device, seed: int,
    checkpoint: bytes | str | None = None, return_draws: bool = False,
) -> TrainLoader:
    """The training loader of one rank, `batch_size` samples a batch (the per-rank batch);
    `checkpoint` (from TrainLoader.checkpoint) resumes."""
    spec = pipeline_spec(data_dir, "train", loader=loader, augment=augment, rank=rank,
                         world_size=world_size, device=device, return_draws=return_draws)
    steps = spec.shards.samples // (world_size * batch_size)
    if steps == 0:
        raise ConfigError(f"{data_dir}: {spec.shards.samples} training samples are fewer than one "
                          f"global batch ({world_size} ranks × {batch_size}); lower it")
    blob, step = (None, 0) if checkpoint is None else _parse_checkpoint(checkpoint, spec, steps)
    gate = build_gate(data_dir, "train", rank, world_size, True, loader.shard_check)
    pipe = build_pipeline(train_pipeline(spec, checkpoint=blob, **pipeline_args(
        spec, loader, batch_size, device, rank_seed(seed, rank))), spec)
    _check_epoch_size(pipe, spec)
    return TrainLoader(pipe, spec, loader, device, steps, step, gate)


def _check_epoch_size(pipe, spec: PipelineSpec) -> None:
    found = pipe.reader_meta(READER_NAME)["epoch_size"]
    if found != spec.shards.samples:
        raise DataError(f"{spec.shards.tars[0]}...: the manifest lists {spec.shards.samples} "
                        f"{spec.shards.split} samples but the shards hold {found}; re-run "
                        "`alexnet-dali preprocess`")


class EvalLoader:
    """One rank's evaluation batches: (images, labels int64 N, valid bool N) on `device`;
    `valid` is False for padding and for the samples the `gate` holds back (loader_integrity.py)."""

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
    data_dir: str | Path, *, split: str = "val", loader: LoaderConfig, augment: AugmentConfig,
    batch_size: int, rank: int, world_size: int, device: torch.device, tencrop: bool = False,
    return_draws: bool = False,
) -> EvalLoader:
    """The evaluation loader of one rank, `batch_size` samples a batch: center crop, or ten views
    (N×10×3×H×W) with tencrop."""
    spec = pipeline_spec(data_dir, split, loader=loader, augment=augment, rank=rank,
                         world_size=world_size, device=device, return_draws=return_draws,
                         training=False)
    spec = replace(spec, shuffle_buffer=1)
    gate = build_gate(data_dir, split, rank, world_size, False, loader.shard_check)
    pipe = build_pipeline(eval_pipeline(spec, tencrop=tencrop,
                                        **pipeline_args(spec, loader, batch_size, device, 0)),
                          spec)
    _check_epoch_size(pipe, spec)
    return EvalLoader(pipe, spec, loader, batch_size, device, gate)
