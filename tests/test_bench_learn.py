"""bench init and bench learn: their arithmetic against NumPy, and both commands end to end on
tiny data (what they print and what the tables hold)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from alexnet_dali.bench.init import class_shift, layer_scales
from alexnet_dali.bench.learn import LearnData, accuracy, fit_softmax, format_table, load_recipes
from alexnet_dali.cli import main


def test_layer_scales_match_numpy_per_unit_statistics():
    """mean/std over everything, signal = each unit's std across the images averaged over units,
    dead = share of units never positive for any image; a conv map's places count as samples
    of the same unit."""

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3)
            self.fc6 = nn.Linear(4 * 6 * 6, 5)
            for name in ("conv2", "conv3", "conv4", "conv5", "fc7", "fc8"):
                setattr(self, name, nn.Identity())

        def forward(self, x):
            return self.fc6(torch.flatten(self.conv1(x), 1))

    torch.manual_seed(0)
    net = Two()
    with torch.no_grad():
        net.fc6.bias[:2] = -50.0  # two units that no image makes positive
    images = torch.randn(6, 3, 8, 8)
    seen = layer_scales(net, images)
    with torch.no_grad():
        conv = net.conv1(images).double().numpy()  # N, C, H, W
        fc = net.fc6(torch.flatten(net.conv1(images), 1)).double().numpy()
    units = conv.transpose(1, 0, 2, 3).reshape(4, 6, -1)
    assert seen["conv1"].mean == pytest.approx(conv.mean(), rel=1e-5)
    assert seen["conv1"].std == pytest.approx(conv.std(ddof=1), rel=1e-5)
    assert seen["conv1"].signal == pytest.approx(units.std(axis=1, ddof=1).mean(), rel=1e-5)
    assert seen["fc6"].signal == pytest.approx(fc.std(axis=0, ddof=1).mean(), rel=1e-5)
    assert seen["fc6"].dead == pytest.approx(((fc <= 0).all(axis=0)).mean())
    assert seen["fc6"].dead >= 0.4


def test_class_shift_is_the_mean_energy_times_a_uniform_softmax_curvature():
    rng = np.random.default_rng(1)
    features = rng.normal(1.0, 0.3, size=(16, 50))
    got = class_shift(torch.from_numpy(features), classes=4, momentum=0.9)
    mean = features.mean(axis=0)
    energy = (mean ** 2).sum()
    assert got["mean_energy"] == pytest.approx(energy)
    assert got["varying_energy"] == pytest.approx(((features - mean) ** 2).sum(axis=1).mean())
    assert got["curvature"] == pytest.approx(energy * 0.25 * 0.75)
    assert got["stable_lr"] == pytest.approx(2 * 1.9 / (energy * 0.25 * 0.75))


def test_the_class_shift_curvature_is_the_loss_hessian_along_that_direction():
    """The quadratic the stable-lr bound rests on: at a uniform softmax, moving fc8's class-k
    row by t along the unit vector mean(h)/|mean(h)| changes the mean cross-entropy by
    1/2 * curvature * t^2 (to second order), when every image's features are the same h."""
    h = torch.full((8, 30), 0.7, dtype=torch.float64)
    labels = torch.arange(8) % 4
    row = torch.zeros(4, 30, dtype=torch.float64)
    unit = h[0] / h[0].norm()

    def loss(t: float) -> float:
        w = row.clone()
        w[2] = t * unit
        return float(nn.functional.cross_entropy(h @ w.T, labels))

    t = 1e-3
    second = (loss(t) - 2 * loss(0.0) + loss(-t)) / t ** 2
    assert second == pytest.approx(class_shift(h, 4, 0.9)["curvature"], rel=1e-4)


def test_the_linear_baseline_fits_a_separable_problem_and_not_a_random_one():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=gen)
    y = (x[:, 0] > 0).long()
    w, b = fit_softmax(x, y, classes=2, l2=1e-4)
    assert accuracy(x, y, w, b) > 0.97
    noise = torch.randint(0, 2, (200,), generator=gen)
    w, b = fit_softmax(x[:100], noise[:100], classes=2, l2=1e-4)
    assert accuracy(x[100:], noise[100:], w, b) < 0.7


def test_recipes_layer_their_files_and_the_table_reads_per_epoch():
    recipes = load_recipes("paper, paper+short-run")
    assert list(recipes) == ["paper", "paper+short-run"]
    assert recipes["paper"]["optim"]["lr"] == 0.01 and "bias_one" in recipes["paper"]["model"]
    assert recipes["paper+short-run"]["model"]["bias_one"] == 0.1
    assert recipes["paper+short-run"]["optim"]["lr_scaling"] == "linear"
    assert recipes["paper+short-run"]["optim"]["hold_at_chance"] is True
    table = format_table({"a": {"val_top1_err": [0.9, 0.5], "seconds": 60.0},
                          "b": {"val_top1_err": [0.8], "seconds": 30.0}}, classes=16,
                         linear={"side": 32, "l2": 0.01, "val_acc": 0.125, "train_acc": 1.0})
    assert table.splitlines()[1:6] == ["| epoch | a | b |", "|---|---|---|",
                                       "| 1 | 0.900 | 0.800 |", "| 2 | 0.500 | - |",
                                       "| wall | 1.0 min | 0.5 min |"]
    assert "chance: 0.938" in table and "val top-1 error 0.875 (train 0.000)" in table


@pytest.mark.slow
def test_bench_init_prints_every_table_and_the_code_init_keeps_the_image_signal(shard_dataset):
    result = CliRunner().invoke(main, ["bench", "init", str(shard_dataset), "--config", "paper",
                                       "--inits", "code,paper", "--steps", "3", "--threads", "2"])
    assert result.exit_code == 0, result.output
    out = result.output
    for heading in ("per layer, before the ReLU, at init", "fc7 output (the logits' input)",
                    "the first 3 steps at lr 0.01", "dead units (ReLU output 0",
                    "relative weight update"):
        assert heading in out, heading
    fc7 = out.split("fc7 output (the logits' input)")[1].split("\n\n")[0]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in fc7.splitlines() if line.startswith(("| code |", "| paper |"))}
    ratio = {init: float(rows[init][2]) for init in ("code", "paper")}  # fc7 signal/mean
    assert ratio["code"] > 5 * ratio["paper"]  # 0.03 on conv3-5 keeps the image's signal


@pytest.mark.slow
def test_bench_learn_trains_each_recipe_and_prints_the_curves(tmp_path):
    out = tmp_path / "learn.json"
    args = ["bench", "learn", "--workdir", str(tmp_path / "work"), "--classes", "2",
            "--train-per-class", "8", "--val-per-class", "4", "--epochs", "1", "--batch-size",
            "8", "--threads", "2", "--recipes", "paper+short-run,paper", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("linear model on the raw pixels: val accuracy ") for line in lines)
    assert "| epoch | paper+short-run | paper |" in lines
    saved = json.loads(out.read_text())
    assert saved["data"] == {**LearnData(classes=2, train_per_class=8, val_per_class=4).__dict__}
    assert [len(r["val_top1_err"]) for r in saved["recipes"].values()] == [1, 1]
    assert saved["chance_top1_err"] == 0.5 and saved["log_classes"] == pytest.approx(math.log(2))
    assert not list((tmp_path / "work" / "runs").glob("*/checkpoints/*.pt"))  # 0.46 GB each
    again = CliRunner().invoke(main, [*args[:-2], "--no-linear", "--recipes", "paper"])
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[0].endswith("(reused: the same settings)")
