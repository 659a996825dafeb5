"""The paper's augmentations (section 4.1) as pure functions of DALI DataNodes.

`random_crop`, `flip` and `pca_lighting` only *draw* per-sample parameters (crop position, mirror
bit, colour shift); `normalize` applies all of them in one fused `fn.crop_mirror_normalize`:

    out = (crop(mirror(x)) - (mean - shift)) / std,   shift = P·(α∘√λ)

so the colour noise costs no extra pass over the pixels: it is folded into a per-sample mean.
Every operator here runs once per batch (a kernel launch on the GPU), so each draw is one operator
and nothing is computed in the graph that a Python constant can carry.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.data_node import DataNode

DALI_DTYPES = {"float32": types.FLOAT, "float16": types.FLOAT16}


def crop_positions(span: int) -> list[float]:
    """The normalised crop positions k/span (k = 0..span) that put a crop at integer anchor k."""
    return [k / span for k in range(span + 1)] if span > 0 else [0.0]


def random_crop(span: int, random: bool = True) -> tuple[DataNode, DataNode]:
    """Crop positions (x, y), float32 k/span with k uniform over 0..span (`span`: image side
    minus crop side, `recipe.crop_span`), else the centre.

    `crop_mirror_normalize` puts the window at round(pos·span) = k, the integer anchor.
    """
    if not random:
        center = fn.constant(fdata=crop_positions(span)[span // 2], shape=[])
        return center, center
    positions = crop_positions(span)
    return fn.random.uniform(values=positions), fn.random.uniform(values=positions)


def flip(probability: float = 0.5) -> DataNode:
    """Mirror bit per sample (int32 0/1): 1 with `probability`."""
    if probability <= 0.0:
        return fn.constant(idata=0, shape=[], dtype=types.INT32)
    return fn.random.coin_flip(probability=probability, dtype=types.INT32)


def pca_lighting(pca_matrix: np.ndarray, std: float,
                 mean: Sequence[float]) -> tuple[DataNode, DataNode]:
    """α ~ N(0, std)³ (float32, shape 1×3) and the per-sample mean − M·α (float32, shape 3).

    `pca_matrix` is M = P·diag(√λ) or P·diag(λ) (`recipe.pca_matrix`); one `coord_transform`
    computes −M·α + mean, so the shift and its subtraction cost one operator.
    """
    alpha = fn.random.normal(shape=[1, 3], stddev=std, dtype=types.FLOAT)
    neg = (-np.asarray(pca_matrix, dtype=np.float64)).ravel()
    shifted = fn.coord_transform(alpha, M=[float(v) for v in neg], T=[float(m) for m in mean])
    return alpha, fn.reshape(shifted, shape=[3])


def subtract_mean_image(images: DataNode, mean_image: np.ndarray, device: str) -> DataNode:
    """HWC uint8 → HWC float32 minus the 256×256 mean image (before any crop or flip)."""
    constant = types.Constant(np.ascontiguousarray(mean_image, dtype=np.float32), device=device)
    return fn.cast(images, dtype=types.FLOAT) - constant


def normalize(
    images: DataNode,
    *,
    crop: int,
    crop_pos: tuple[DataNode | float, DataNode | float] = (0.5, 0.5),
    mirror: DataNode | int = 0,
    mean: Sequence[float] | DataNode = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    dtype: str = "float32",
    layout: str = "CHW",
) -> DataNode:
    """HWC → `layout` float32/16: crop at `crop_pos`, mirror, (x − mean) / std, fused.

    `mean` is 3 floats or a per-sample DataNode of shape 3 (the mean minus the colour shift).
    """
    return fn.crop_mirror_normalize(
        images,
        crop=(crop, crop),
        crop_pos_x=crop_pos[0],
        crop_pos_y=crop_pos[1],
        mirror=mirror,
        mean=mean if isinstance(mean, DataNode) else [float(m) for m in mean],
        std=[float(s) for s in std],
        dtype=DALI_DTYPES[dtype],
        output_layout=layout,
    )
