"""The augmentation recipe's arithmetic in one place: from `AugmentConfig` and the training
data's colour statistics (pca.json), the numbers the graphs subtract, divide by and shift the
colours by, and that predict and export normalise with.

No DALI: the graphs read a `Recipe` (`PipelineSpec.recipe`). The NumPy references
(`reference.py`) write the same arithmetic out again on their own, to check it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alexnet_dali.config.schema import AugmentConfig
from alexnet_dali.errors import ConfigError
from alexnet_dali.tools.pca import ColourStats

# augment.pca_scale -> each eigenvector's weight w(λ) in the colour shift P·(α∘w): √λ, the
# authors' code (cuda-convnet2); λ, the paper's text read literally (docs/PIPELINE.md)
PCA_SCALES = {
    "sqrt": lambda eigenvalues: np.sqrt(np.maximum(eigenvalues, 0.0)),
    "eigenvalue": lambda eigenvalues: eigenvalues,
}


def needs_colour_stats(augment: AugmentConfig, training: bool) -> bool:
    """Whether pca.json must be read: for PCA noise, the mean image, or a mean/std not given
    explicitly (augment.mean_rgb / std_rgb)."""
    return ((training and augment.pca_noise) or augment.mean == "image"
            or (augment.mean == "channel" and not augment.mean_rgb)
            or (augment.std_normalize and not augment.std_rgb))


def pca_matrix(stats: ColourStats, scale: str = "sqrt") -> np.ndarray:
    """3x3 float32 M with shift = M·α: P·diag(√λ) ("sqrt") or P·diag(λ) ("eigenvalue")."""
    p = np.asarray(stats.eigenvectors, dtype=np.float64)
    weights = PCA_SCALES[scale](np.asarray(stats.eigenvalues, dtype=np.float64))
    return (p * weights[None, :]).astype(np.float32)


def crop_span(image_size: int, crop: int) -> int:
    """The anchors a `crop`-sided window can take along a side of the shard images, minus one
    (image_size - crop); a ConfigError when the crop does not fit."""
    span = image_size - crop
    if span < 0:
        raise ConfigError(f"augment.crop = {crop} is larger than the {image_size}x{image_size} "
                          "shard images; lower it, or preprocess with --size of at least it")
    return span


@dataclass(frozen=True)
class Recipe:
    """The numbers of one split's augmentation, on the 0-255 scale (RGB)."""

    mean: tuple[float, ...]  # subtracted per channel (0 with the mean image or mean = "none")
    std: tuple[float, ...]  # the eval views' divisor per channel (1 without std_normalize)
    divisor: tuple[float, ...]  # training's: std × (1 + pca_std) with pca_rescale, else std
    pca: np.ndarray | None = field(default=None, compare=False, repr=False)  # M: shift = M·α
    mean_image: np.ndarray | None = field(default=None, compare=False, repr=False)  # HWC f32

    @classmethod
    def of(cls, augment: AugmentConfig, stats: ColourStats | None,
           training: bool = True) -> Recipe:
        """The recipe of `augment` with the training data's `stats` (None where
        `needs_colour_stats` says none are needed); `training`: with the colour noise.

        Explicit `mean_rgb` / `std_rgb` win over pca.json's. cuda-convnet2 multiplies each
        noised, mean-subtracted batch by 1/(1 + pca_std) (`pca_rescale`) so that training inputs
        keep the scale of the noise-free test inputs: folded into the divisor, it costs nothing.
        """
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if augment.mean == "channel":
            mean = tuple(float(v) for v in augment.mean_rgb) if augment.mean_rgb else stats.mean
        if augment.std_normalize:
            std = tuple(float(v) for v in augment.std_rgb) if augment.std_rgb else stats.std
        noise = training and augment.pca_noise
        divisor = (tuple(s * (1.0 + augment.pca_std) for s in std)
                   if noise and augment.pca_rescale else std)
        return cls(mean, std, divisor, pca_matrix(stats, augment.pca_scale) if noise else None,
                   stats.mean_image if augment.mean == "image" else None)
