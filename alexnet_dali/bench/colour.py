"""`bench colour-noise`: the per-channel std of the PCA colour shift, measured through the loader.

The shift is read off the training loader's own output: with a centre crop (the noise does not
depend on the crop) and no std division, out = crop(x) − mean + shift, so per image and channel
shift = mean(out) − mean(crop(x) − mean), with x the decoded image the loader returns in test
mode. It is printed next to the formula's std, pca_std·sqrt(Σ_i P[c,i]²·w_i²), w = √λ or λ.

By default the colour statistics are ImageNet's as the authors used them: cuda-convnet2's
`make-data/input_meta` stores the PCA standard deviations √λ = (19.72, 37.09, 121.78) of 0-255
RGB pixels (ascending, as numpy's `eigh` returns them). Its eigenvectors are not published in
text form; we pair those values with the ImageNet RGB eigenvectors that fb.resnet.torch publishes
(`datasets/imagenet.lua`, the same decomposition on 0-1 pixels: √λ·255 = 118.9, 35.0, 17.1).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.pipelines.recipe import PCA_SCALES, pca_matrix
from alexnet_dali.pipelines.spec import Draws
from alexnet_dali.tools.pca import ColourStats

_EIGEN_STDEVS = (19.72, 37.09, 121.78)  # cuda-convnet2 input_meta color_pca[0], 0-255 pixels
IMAGENET_STATS = ColourStats(
    mean=(123.675, 116.28, 103.53),  # torchvision's ImageNet mean x 255 (no effect on the shift)
    std=(58.395, 57.12, 57.375),
    eigenvalues=tuple(s * s for s in _EIGEN_STDEVS),
    # columns: fb.resnet.torch's eigenvectors, in the ascending order of the values above
    eigenvectors=((0.4009, 0.7192, -0.5675),
                  (-0.8140, -0.0045, -0.5808),
                  (0.4203, -0.6948, -0.5836)),
)
SCALES = tuple(sorted(PCA_SCALES))  # every augment.pca_scale: eigenvalue, sqrt


def formula_std(stats: ColourStats, scale: str, pca_std: float) -> np.ndarray:
    """Per-channel std of shift = M·α, α ~ N(0, pca_std²·I): pca_std·‖row c of M‖ (float64 ×3)."""
    return pca_std * np.linalg.norm(pca_matrix(stats, scale).astype(np.float64), axis=1)


def with_stats(data_dir: Path, stats: ColourStats, workdir: Path) -> Path:
    """A shard folder that links `data_dir`'s manifest and shards and holds `stats` as pca.json."""
    from alexnet_dali.tools.manifest import MANIFEST_NAME
    from alexnet_dali.tools.outdir import write_json_atomic
    from alexnet_dali.tools.pca import PCA_NAME

    for entry in data_dir.iterdir():
        if entry.is_dir() or entry.name == MANIFEST_NAME:
            (workdir / entry.name).symlink_to(entry.resolve())
    write_json_atomic(workdir / PCA_NAME, {
        "mean": list(stats.mean), "std": list(stats.std),
        "eigenvalues": list(stats.eigenvalues),
        "eigenvectors": [list(row) for row in stats.eigenvectors],
    })
    return workdir


def colour_shifts(data_dir: Path, augment: AugmentConfig, *, batches: int, batch_size: int,
                  threads: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(shifts, α), float64 N×3 each: the colour shift in the loader's output and its draws.

    Needs `augment.mean == "channel"`, `std_normalize` off and no rescale (checked).
    """
    import torch

    from alexnet_dali.loader.train import build_train_loader
    from alexnet_dali.pipelines.spec import load_shard_set
    from alexnet_dali.tools.pca import load_colour_stats

    if augment.mean != "channel" or augment.std_normalize or augment.pca_rescale:
        raise ValueError("colour_shifts reads the shift off (x - mean + shift): use mean="
                         "'channel', std_normalize=False, pca_rescale=False")
    augment = replace(augment, random_crop=False)  # a known window: the centre
    loader = LoaderConfig(num_threads=threads, prefetch=1, shuffle_buffer=batch_size)
    tl = build_train_loader(data_dir, loader=loader, augment=augment, batch_size=batch_size,
                            rank=0, world_size=1, device=torch.device("cpu"), seed=seed,
                            return_draws=True)
    mean = np.asarray(load_colour_stats(data_dir).mean, dtype=np.float64)
    lo = (load_shard_set(data_dir, "train").image_size - augment.crop) // 2
    window = slice(lo, lo + augment.crop)
    shifts, alphas = [], []
    for _ in range(batches):
        images, _, *outputs = tl.run_with_draws()
        draws = Draws.of(outputs)
        alpha, decoded = draws.alpha, draws.decoded
        crops = decoded[:, window, window].double().mean(dim=(1, 2)).numpy()
        shifts.append(images.double().mean(dim=(2, 3)).numpy() - (crops - mean))
        alphas.append(alpha.double().numpy())
    return np.concatenate(shifts), np.concatenate(alphas)


def run_colour_bench(data_dir: Path, *, imagenet: bool, batches: int, batch_size: int,
                     threads: int, pca_std: float = 0.1) -> dict[str, np.ndarray]:
    """Print the measured and the formula's shift std per channel for each pca_scale."""
    from alexnet_dali.tools.pca import load_colour_stats

    print(f"data {data_dir}; colour statistics: "
          f"{'ImageNet (cuda-convnet2 stdevs)' if imagenet else 'the data pca.json'}; "
          f"pca_std {pca_std}; {batches} batches of {batch_size}; "
          f"load average {os.getloadavg()[0]:.1f}")
    lines = ["| pca_scale | measured shift std R | G | B | formula R | G | B | images |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    measured = {}
    with tempfile.TemporaryDirectory(prefix="alexnet-dali-colour-") as tmp:
        root = with_stats(data_dir, IMAGENET_STATS, Path(tmp)) if imagenet else data_dir
        stats = load_colour_stats(root)
        for scale in SCALES:
            aug = AugmentConfig(pca_scale=scale, pca_std=pca_std)
            shifts, _ = colour_shifts(root, aug, batches=batches, batch_size=batch_size,
                                      threads=threads)
            measured[scale] = shifts.std(axis=0)
            cells = [f"{v:,.1f}" for v in (*measured[scale], *formula_std(stats, scale, pca_std))]
            lines.append(f"| {scale} | {' | '.join(cells)} | {len(shifts)} |")
    print("\n".join(lines))
    ratio = measured["eigenvalue"].mean() / measured["sqrt"].mean()
    print(f"eigenvalue / sqrt: {ratio:.0f}x; pixels span 0-255")
    return measured
