"""`bench colour-noise`: the colour shift read off the loader's output is M·α, with the std the
formula predicts, for both pca_scale settings (NumPy references)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import write_dataset

from alexnet_dali.bench.colour import IMAGENET_STATS, colour_shifts, formula_std
from alexnet_dali.cli import main
from alexnet_dali.config.schema import AugmentConfig
from alexnet_dali.tools.pca import load_colour_stats


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("colour"), {"train": 12}, per_shard=6)


@pytest.mark.parametrize("scale", ["sqrt", "eigenvalue"])
def test_shift_in_the_output_is_the_pca_formula(data: Path, scale: str) -> None:
    pca = json.loads((data / "pca.json").read_text())
    p, lam = np.asarray(pca["eigenvectors"]), np.asarray(pca["eigenvalues"])
    weights = np.sqrt(lam) if scale == "sqrt" else lam
    shifts, alphas = colour_shifts(data, AugmentConfig(pca_scale=scale, pca_std=0.5), batches=16,
                                   batch_size=6, threads=1)
    assert shifts.shape == alphas.shape == (96, 3)
    expected = alphas @ (p * weights).T  # shift = Σ_i p_i·α_i·w_i per image
    np.testing.assert_allclose(shifts, expected, rtol=1e-4, atol=1e-3 * weights.max())
    predicted = 0.5 * np.sqrt((p ** 2) @ (weights ** 2))
    np.testing.assert_allclose(formula_std(load_colour_stats(data), scale, 0.5), predicted,
                               rtol=1e-6)
    np.testing.assert_allclose(shifts.std(axis=0), predicted, rtol=0.3)  # 96 draws


def test_imagenet_stats_are_an_eigen_decomposition() -> None:
    """Orthonormal eigenvector columns; √λ = cuda-convnet2's stdevs."""
    p = np.asarray(IMAGENET_STATS.eigenvectors)
    np.testing.assert_allclose(p.T @ p, np.eye(3), atol=2e-4)
    np.testing.assert_allclose(np.sqrt(IMAGENET_STATS.eigenvalues), [19.72, 37.09, 121.78])


def test_bench_colour_noise_prints_both_scales(data: Path) -> None:
    result = CliRunner().invoke(main, [
        "bench", "colour-noise", "--data", str(data), "--batches", "2", "--batch-size", "6",
        "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^\| (eigenvalue|sqrt) \| ([\d,.]+) \|", result.output, re.M)
    assert [name for name, _ in rows] == ["eigenvalue", "sqrt"]
    stds = {name: float(v.replace(",", "")) for name, v in rows}
    assert stds["eigenvalue"] > 50 * stds["sqrt"]  # λ vs √λ with λ in the thousands
