"""Reading WebDataset shards and decoding JPEGs inside a DALI graph (shared by all graphs)."""

from __future__ import annotations

from nvidia.dali import fn, types
from nvidia.dali.data_node import DataNode

from alexnet_dali.pipelines.spec import PipelineSpec

READER_NAME = "Reader"


def read_members(spec: PipelineSpec, training: bool) -> tuple[DataNode, DataNode]:
    """The `.jpg` and `.cls` members (uint8, 1-D) of this rank's part of the split, as stored.

    The `.cls` digits leave the graph untouched: the loader turns a whole batch of them into
    int64 labels in one vectorised step (`loader/handoff.py` `labels_from_digits`), where in the
    graph it took ~18 per-sample operators.

    Training shuffles (buffer of `shuffle_buffer` samples) and moves to the next reader shard
    every epoch; evaluation reads in order, sticks to its shard and pads its last batch.
    """
    index = {"index_paths": list(spec.shards.indexes)} if spec.shards.indexes else {}
    per_shard = max(1, spec.shards.samples // spec.num_shards)
    jpegs, digits = fn.readers.webdataset(
        paths=list(spec.shards.tars),
        ext=["jpg", "cls"],
        dtypes=[types.UINT8, types.UINT8],
        missing_component_behavior="error",
        shard_id=spec.shard_id,
        num_shards=spec.num_shards,
        random_shuffle=training,
        initial_fill=max(1, min(spec.shuffle_buffer, per_shard)),
        stick_to_shard=not training,
        pad_last_batch=not training,
        name=READER_NAME,
        **index,
    )
    return jpegs, digits


def decode(jpegs: DataNode, device: str, hw_decoder_load: float) -> DataNode:
    """JPEG bytes → HWC uint8 RGB; nvJPEG + the hardware decoder on "gpu", libjpeg on "cpu"."""
    if device == "gpu":
        return fn.decoders.image(
            jpegs,
            device="mixed",
            output_type=types.RGB,
            hw_decoder_load=hw_decoder_load,
            # 256x256 baseline JPEGs: preallocate so the first batches do not reallocate
            preallocate_width_hint=256,
            preallocate_height_hint=256,
        )
    return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
