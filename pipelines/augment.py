"""The paper's augmentations (section 4.1) as pure functions of DALI DataNodes.

`random_crop`, `flip` and `pca_lighting` only *draw* per-sample parameters (crop anchor, mirror
bit, colour shift); `normalize` applies all of them in one fused `fn.crop_mirror_normalize`:

    out = (crop(mirror(x)) - (mean - shift)) / std,   shift = P·(α∘λ)

so the colour noise costs no extra pass over the pixels: it is folded into a per-sample mean.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.data_node import DataNode

from alexnet_dali.errors import ConfigError

DALI_DTYPES = {"float32": types.FLOAT, "float16": types.FLOAT16}


def random_crop(image_size: int, crop: int, random: bool = True) -> tuple[DataNode, DataNode]:
    """Integer crop anchors (x, y), int32 scalars: uniform over 0..image_size-crop, else centred."""
    span = image_size - crop
    if span < 0:
        raise ConfigError(f"augment.crop = {crop} is larger than the {image_size}x{image_size} "
                          "shard images; lower it, or preprocess with --size of at least it")
    if not random:
        center = fn.constant(idata=span // 2, shape=[], dtype=types.INT32)
        return center, center
    positions = list(range(span + 1))
    x = fn.random.uniform(values=positions, dtype=types.INT32)
    y = fn.random.uniform(values=positions, dtype=types.INT32)
    return x, y


def flip(probability: float = 0.5) -> DataNode:
    """Mirror bit per sample (int32 0/1): 1 with `probability`."""
    if probability <= 0.0:
        return fn.constant(idata=0, shape=[], dtype=types.INT32)
    return fn.random.coin_flip(probability=probability, dtype=types.INT32)


def pca_lighting(pca_matrix: np.ndarray, std: float) -> tuple[DataNode, DataNode]:
    """α ~ N(0, std)³ (float32, shape 3) and the RGB shift P·(α∘λ) = M·α (float32, shape 3).

    `pca_matrix` is M = P·diag(λ) (`spec.pca_matrix`); the product runs in the graph.
    """
    alpha = fn.random.normal(shape=[3], stddev=std, dtype=types.FLOAT)
    shift = fn.coord_transform(
        fn.reshape(alpha, shape=[1, 3]), M=[float(v) for v in np.asarray(pca_matrix).ravel()]
    )
    return alpha, fn.reshape(shift, shape=[3])


def subtract_mean_image(images: DataNode, mean_image: np.ndarray, device: str) -> DataNode:
    """HWC uint8 → HWC float32 minus the 256×256 mean image (before any crop or flip)."""
    constant = types.Constant(np.ascontiguousarray(mean_image, dtype=np.float32), device=device)
    return fn.cast(images, dtype=types.FLOAT) - constant


def normalize(
    images: DataNode,
    *,
    crop: int,
    anchor: tuple[DataNode, DataNode],
    span: int,
    mirror: DataNode | int = 0,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    shift: DataNode | None = None,
    std: Sequence[float] = (1.0, 1.0, 1.0),
    dtype: str = "float32",
    layout: str = "CHW",
) -> DataNode:
    """HWC → `layout` float32/16: crop at `anchor`, mirror, (x − (mean − shift)) / std, fused."""
    x, y = anchor
    pos = {}
    if span > 0:  # crop_pos is normalised; anchor/span * span rounds back to the exact anchor
        pos = {
            "crop_pos_x": fn.cast(x, dtype=types.FLOAT) / float(span),
            "crop_pos_y": fn.cast(y, dtype=types.FLOAT) / float(span),
        }
    mean_arg = [float(m) for m in mean] if shift is None else types.Constant(
        np.asarray(mean, dtype=np.float32)
    ) - shift
    return fn.crop_mirror_normalize(
        images,
        crop=(crop, crop),
        mirror=mirror,
        mean=mean_arg,
        std=[float(s) for s in std],
        dtype=DALI_DTYPES[dtype],
        output_layout=layout,
        **pos,
    )
