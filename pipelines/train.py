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
from alexnet_dali.pipelines.readers import decode, read_members
from alexnet_dali.pipelines.spec import PipelineSpec, channel_mean_and_std, pca_matrix


def mean_and_std(spec: PipelineSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean to subtract (0 with the mean image or mean="none") and divisor."""
    return channel_mean_and_std(spec.augment, spec.stats)


def train_divisor(spec: PipelineSpec) -> tuple[float, ...]:
    """The training graph's divisor: `mean_and_std`'s, × (1 + pca_std) with `pca_rescale`.

    cuda-convnet2 multiplies each noised, mean-subtracted batch by 1/(1 + color_noise) so that
    training inputs keep the overall scale of the (noise-free) test inputs; folded into `std`,
    it costs nothing.
    """
    aug = spec.augment
    _, std = mean_and_std(spec)
    if aug.pca_noise and aug.pca_rescale:
        return tuple(s * (1.0 + aug.pca_std) for s in std)
    return std


@pipeline_def(enable_checkpointing=True)
def train_pipeline(spec: PipelineSpec):
    """Outputs images N×3×crop×crop (spec.layout, spec.dtype) and `.cls` digits N×6 (uint8).

    With `spec.return_draws` also: crop positions x, y (float32 k/span: anchor k), mirror bit
    (int32), α (float32 ×3) and the decoded image (HWC uint8), so a NumPy reference can replay
    the augmentation.
    """
    aug = spec.augment
    jpegs, digits = read_members(spec, training=True)
    images = decode(jpegs, spec.device, spec.hw_decoder_load)
    decoded = images
    if aug.mean == "image":
        images = subtract_mean_image(images, spec.stats.mean_image, spec.device)
    crop_pos = random_crop(spec.shards.image_size, aug.crop, random=aug.random_crop)
    mirror = flip(0.5 if aug.flip else 0.0)
    mean, _ = mean_and_std(spec)
    alpha = None
    if aug.pca_noise:
        alpha, mean = pca_lighting(pca_matrix(spec.stats, aug.pca_scale), aug.pca_std, mean)
    out = normalize(images, crop=aug.crop, crop_pos=crop_pos, mirror=mirror, mean=mean,
                    std=train_divisor(spec), dtype=spec.dtype, layout=spec.layout)
    if not spec.return_draws:
        return out, digits
    alpha = (fn.constant(fdata=[0.0, 0.0, 0.0], shape=[3]) if alpha is None
             else fn.reshape(alpha, shape=[3]))
    return out, digits, crop_pos[0], crop_pos[1], mirror, alpha, decoded
