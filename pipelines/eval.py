"""The evaluation graphs: the center 224 crop, or ten views per image for softmax averaging.

Ten-crop view order (the axis of size 10, `TENCROP_VIEWS`): views 0-4 are the crops at the
top-left, top-right, bottom-left, bottom-right corners and the center; views 5-9 are the same five
crops, each mirrored horizontally in place. That is Caffe's order (`oversample` in its Python
`io.py`). cuda-convnet2 puts the center third (top-left, top-right, center, bottom-left,
bottom-right, then the same five mirrored); torchvision's TenCrop holds the same ten views but
builds 5-9 from the flipped image, so its view 5 (flipped top-left) is our view 6 (mirrored
top-right crop). Averaging the softmax over views does not depend on the order.
"""

from __future__ import annotations

from nvidia.dali import fn, pipeline_def

from alexnet_dali.pipelines.augment import crop_positions, normalize, subtract_mean_image
from alexnet_dali.pipelines.readers import decode, read_members
from alexnet_dali.pipelines.recipe import crop_span
from alexnet_dali.pipelines.spec import PipelineSpec

# (name, anchor x as a fraction of the span, anchor y fraction, mirrored)
TENCROP_VIEWS: tuple[tuple[str, int, int, bool], ...] = tuple(
    (("mirrored " if m else "") + name, fx, fy, m)
    for m in (False, True)
    for name, fx, fy in (
        ("top-left", 0, 0), ("top-right", 1, 0), ("bottom-left", 0, 1),
        ("bottom-right", 1, 1), ("center", -1, -1),  # -1: span // 2
    )
)


def view_anchor(view: int, span: int) -> tuple[int, int]:
    """Integer (x, y) anchor of ten-crop view `view` in an image with `span` = size - crop."""
    _, fx, fy, _ = TENCROP_VIEWS[view]
    return tuple(span // 2 if f < 0 else f * span for f in (fx, fy))  # type: ignore[return-value]


def view_crop_pos(view: int, span: int) -> tuple[float, float]:
    """`crop_mirror_normalize`'s normalised (x, y) position of view `view`: anchor / span."""
    positions = crop_positions(span)
    x, y = view_anchor(view, span)
    return positions[x], positions[y]


@pipeline_def
def eval_pipeline(spec: PipelineSpec, tencrop: bool = False):
    """Outputs images N×3×crop×crop (N×10×3×crop×crop with `tencrop`) and `.cls` digits N×6.

    With `spec.return_draws` also the decoded image (HWC uint8). Crop positions and mirror bits
    are Python constants: the views cost one `crop_mirror_normalize` each, nothing more.
    """
    aug, recipe = spec.augment, spec.recipe
    jpegs, digits = read_members(spec, training=False)
    decoded = decode(jpegs, spec.device, spec.hw_decoder_load)
    images = decoded
    if recipe.mean_image is not None:
        images = subtract_mean_image(decoded, recipe.mean_image, spec.device)
    span = crop_span(spec.shards.image_size, aug.crop)
    common = dict(crop=aug.crop, mean=recipe.mean, std=recipe.std, dtype=spec.dtype,
                  layout=spec.layout)
    if not tencrop:
        out = normalize(images, crop_pos=view_crop_pos(4, span), **common)  # view 4: center
    else:
        out = fn.stack(*(normalize(images, crop_pos=view_crop_pos(view, span),
                                   mirror=int(mirrored), **common)
                         for view, (_, _, _, mirrored) in enumerate(TENCROP_VIEWS)), axis=0)
    if spec.return_draws:
        return out, digits, decoded
    return out, digits
