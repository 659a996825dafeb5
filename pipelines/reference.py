"""NumPy references of the DALI graphs, replaying the draws a graph returns in test mode.

Shared by the tests and `alexnet-dali doctor`. Independent of the graph code on purpose: plain
NumPy in float64, the paper's section 4.1 written out step by step (no DALI, no `pipelines/`
helper, not `recipe.py`'s arithmetic); the colour statistics come from pca.json's one reader
(`tools.pca.load_colour_stats`) as plain values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alexnet_dali.tools.pca import load_colour_stats

# float32 graph output vs the float64 reference, pixels on the 0-255 scale
FLOAT32_ATOL = 2e-3
TENCROP_WINDOWS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")


def read_stats(data_dir: str | Path) -> dict[str, Any]:
    """A shard folder's pca.json and mean image (which the references' folders have) as plain
    values: mean, std, eigenvalues, eigenvectors (columns), `mean_image_array` (HWC)."""
    stats = load_colour_stats(data_dir, need_mean_image=True)
    return {"mean": list(stats.mean), "std": list(stats.std),
            "eigenvalues": list(stats.eigenvalues),
            "eigenvectors": [list(row) for row in stats.eigenvectors],
            "mean_image_array": stats.mean_image}


def anchor(position: float, span: int = 32) -> int:
    """The integer crop anchor k of a returned crop position, which must be exactly k/span."""
    k = int(np.rint(float(position) * span))
    if abs(float(position) - k / span) > 1e-6:
        raise ValueError(f"crop position {position} is not k/{span} for an integer k")
    return k


def normalised(decoded: np.ndarray, aug: Any, stats: dict[str, Any],
               alpha: np.ndarray | None = None) -> np.ndarray:
    """HWC uint8 → HWC float64: minus the mean (per channel or the image), plus the colour
    noise of α (training), times 1/(1 + pca_std) with `pca_rescale`, divided by the std."""
    img = decoded.astype(np.float64)
    if aug.mean == "image":
        img = img - stats["mean_image_array"]
    elif aug.mean == "channel":
        img = img - np.asarray(stats["mean"])
    if alpha is not None and aug.pca_noise:
        p = np.asarray(stats["eigenvectors"])  # columns are the eigenvectors p_i
        lam = np.asarray(stats["eigenvalues"], dtype=np.float64)
        if aug.pca_scale == "sqrt":
            lam = np.sqrt(lam)
        img = img + sum(p[:, i] * alpha[i] * lam[i] for i in range(3))
        if aug.pca_rescale:  # cuda-convnet2 scales the noised image back
            img = img / (1.0 + aug.pca_std)
    if aug.std_normalize:
        img = img / np.asarray(stats["std"])
    return img


def train_view(decoded: np.ndarray, x: int, y: int, mirror: int, alpha: np.ndarray, aug: Any,
               stats: dict[str, Any]) -> np.ndarray:
    """The training sample of section 4.1 from its draws: HWC uint8 → CHW float64 crop."""
    img = normalised(decoded, aug, stats, alpha)[y:y + aug.crop, x:x + aug.crop]
    if mirror:
        img = img[:, ::-1]
    return img.transpose(2, 0, 1)


def tencrop_views(decoded: np.ndarray, aug: Any, stats: dict[str, Any]) -> np.ndarray:
    """10×CHW float64: the four corner crops and the centre crop, then each mirrored in place."""
    img = normalised(decoded, aug, stats)
    span = img.shape[0] - aug.crop
    corners = {"top-left": (0, 0), "top-right": (0, span), "bottom-left": (span, 0),
               "bottom-right": (span, span), "center": (span // 2, span // 2)}
    crops = [img[r:r + aug.crop, c:c + aug.crop] for r, c in
             (corners[name] for name in TENCROP_WINDOWS)]
    views = crops + [crop[:, ::-1] for crop in crops]
    return np.stack([view.transpose(2, 0, 1) for view in views])
