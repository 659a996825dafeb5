"""One rank's DALI pipeline: its spec (shards, colour statistics, recipe, where it runs), the
`Pipeline` arguments, and building and running it with errors a user can act on (a damaged or
cut-short shard, unreachable `s3://` shards, a sample count the manifest does not list)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.errors import ConfigError, CorruptSampleError, DataError
from alexnet_dali.pipelines.readers import READER_NAME
from alexnet_dali.loader.data import ShardData, open_shards
from alexnet_dali.pipelines.recipe import Recipe, needs_colour_stats
from alexnet_dali.pipelines.spec import PipelineSpec
from alexnet_dali.tools.shards import iter_shard
from alexnet_dali.tools.storage import StorageError, is_remote


def pipeline_spec(
    data: str | Path | ShardData, split: str, *, loader: LoaderConfig, augment: AugmentConfig,
    rank: int, world_size: int, device: torch.device, return_draws: bool = False,
    training: bool = True,
) -> PipelineSpec:
    """The PipelineSpec of one rank: shard_id = global rank, num_shards = world size."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    data = open_shards(data)
    shards = data.shard_set(split)
    if shards.samples < world_size:
        raise DataError(f"{data}: split {split!r} has {shards.samples} samples, "
                         f"fewer than the {world_size} ranks")
    pipe_device = pipeline_device(loader, device)
    return PipelineSpec(
        shards=shards,
        recipe=Recipe.of(augment, data.colour_stats(need_mean_image=augment.mean == "image")
                         if needs_colour_stats(augment, training) else None, training),
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


def check_epoch_size(pipe, spec: PipelineSpec) -> None:
    """A DataError when the reader finds another sample count than the manifest lists."""
    found = pipe.reader_meta(READER_NAME)["epoch_size"]
    if found != spec.shards.samples:
        raise DataError(f"{spec.shards.tars[0]}...: the manifest lists {spec.shards.samples} "
                        f"{spec.shards.split} samples but the shards hold {found}; re-run "
                        "`alexnet-dali preprocess`")
