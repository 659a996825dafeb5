"""The minimal train graph, the yardstick of `bench pipeline --baseline`.

Read, decode, and one fused `crop_mirror_normalize` with a random crop position, a random mirror
bit and a fixed per-channel mean (the recipe's): the least any AlexNet train graph does. The
`.cls` digits are returned as stored. Measured beside the project's `train_pipeline` on the same
shards, it shows what the project's own additions (labels, replayable crop anchors, PCA colour
noise, the hand-off to torch) cost.
"""

from __future__ import annotations

from nvidia.dali import fn, pipeline_def

from alexnet_dali.pipelines.augment import DALI_DTYPES
from alexnet_dali.pipelines.readers import decode, read_members
from alexnet_dali.pipelines.spec import PipelineSpec


@pipeline_def
def baseline_pipeline(spec: PipelineSpec):
    """Outputs images N×3×crop×crop (spec.layout, spec.dtype) and the `.cls` digits N×6 (uint8)."""
    jpegs, digits = read_members(spec, training=True)
    images = decode(jpegs, spec.device, spec.hw_decoder_load)
    crop = spec.augment.crop
    out = fn.crop_mirror_normalize(
        images,
        crop=(crop, crop),
        crop_pos_x=fn.random.uniform(range=[0.0, 1.0]),
        crop_pos_y=fn.random.uniform(range=[0.0, 1.0]),
        mirror=fn.random.coin_flip(probability=0.5),
        mean=[float(m) for m in spec.recipe.mean],
        std=[1.0, 1.0, 1.0],
        dtype=DALI_DTYPES[spec.dtype],
        output_layout=spec.layout,
    )
    return out, digits
