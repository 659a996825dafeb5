"""The training graph: read → decode → random crop, flip, PCA colour noise, normalise → batch."""

from __future__ import annotations

from nvidia.dali import fn, pipeline_def

from alexnet_dali.pipelines.augment import (
    flip,
    normalize,
    pca_lighting,
    random_crop,
    subtract_mean_image,
)
from alexnet_dali.pipelines.readers import decode, read_shards
from alexnet_dali.pipelines.spec import PipelineSpec, channel_mean_and_std, pca_matrix


def mean_and_std(spec: PipelineSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean to subtract (0 with the mean image or mean="none") and divisor."""
    return channel_mean_and_std(spec.augment, spec.stats)


@pipeline_def(enable_checkpointing=True)
def train_pipeline(spec: PipelineSpec):
    """Outputs images N×3×crop×crop (spec.layout, spec.dtype) and int64 labels N.

    With `spec.return_draws` also: anchor x, anchor y (int32), mirror bit (int32), α (float32 ×3)
    and the decoded image (HWC uint8), so a NumPy reference can replay the augmentation.
    """
    aug = spec.augment
    jpegs, labels = read_shards(spec, training=True)
    images = decode(jpegs, spec.device, spec.hw_decoder_load)
    if aug.mean == "image":
        decoded, images = images, subtract_mean_image(images, spec.stats.mean_image, spec.device)
    else:
        decoded = images
    anchor = random_crop(spec.shards.image_size, aug.crop, random=aug.random_crop)
    mirror = flip(0.5 if aug.flip else 0.0)
    if aug.pca_noise:
        alpha, shift = pca_lighting(pca_matrix(spec.stats, aug.pca_scale), aug.pca_std)
    else:
        alpha, shift = fn.constant(fdata=[0.0, 0.0, 0.0], shape=[3]), None
    mean, std = mean_and_std(spec)
    out = normalize(
        images, crop=aug.crop, anchor=anchor, span=spec.shards.image_size - aug.crop,
        mirror=mirror, mean=mean, shift=shift, std=std, dtype=spec.dtype, layout=spec.layout,
    )
    if spec.return_draws:
        return out, labels, anchor[0], anchor[1], mirror, alpha, decoded
    return out, labels
