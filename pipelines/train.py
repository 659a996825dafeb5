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
from alexnet_dali.pipelines.recipe import crop_span
from alexnet_dali.pipelines.spec import Draws, PipelineSpec


@pipeline_def(enable_checkpointing=True)
def train_pipeline(spec: PipelineSpec):
    """Outputs images N×3×crop×crop (spec.layout, spec.dtype) and `.cls` digits N×6 (uint8).

    With `spec.return_draws` also the `Draws`: crop positions x, y (float32 k/span: anchor k),
    mirror bit (int32), α (float32 ×3) and the decoded image (HWC uint8), so a NumPy reference
    can replay the augmentation. The operators are made in a fixed order: a DALI checkpoint
    restores only into the graph that wrote it.
    """
    aug, recipe = spec.augment, spec.recipe
    jpegs, digits = read_members(spec, training=True)
    images = decode(jpegs, spec.device, spec.hw_decoder_load)
    decoded = images
    if recipe.mean_image is not None:
        images = subtract_mean_image(images, recipe.mean_image, spec.device)
    crop_pos = random_crop(crop_span(spec.shards.image_size, aug.crop), random=aug.random_crop)
    mirror = flip(0.5 if aug.flip else 0.0)
    mean, alpha = recipe.mean, None
    if recipe.pca is not None:
        alpha, mean = pca_lighting(recipe.pca, aug.pca_std, mean)
    out = normalize(images, crop=aug.crop, crop_pos=crop_pos, mirror=mirror, mean=mean,
                    std=recipe.divisor, dtype=spec.dtype, layout=spec.layout)
    if not spec.return_draws:
        return out, digits
    alpha = (fn.constant(fdata=[0.0, 0.0, 0.0], shape=[3]) if alpha is None
             else fn.reshape(alpha, shape=[3]))
    return (out, digits, *Draws(crop_pos[0], crop_pos[1], mirror, alpha, decoded).outputs())
