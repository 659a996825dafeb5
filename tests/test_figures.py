"""Figures: the conv1 grid layout, curves from metrics.jsonl, fc7 neighbours end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_dali.checkpoint import new_state, save_checkpoint
from alexnet_dali.config import ModelConfig, TrainConfig
from alexnet_dali.errors import DataError
from alexnet_dali.figures import (conv1_grid, fc7_of_split, make_figures, nearest_neighbours,
                                  plot_curves, plot_neighbours)
from alexnet_dali.runlog import read_metrics
from alexnet_dali.model import build_model

METRICS = [
    {"kind": "train", "epoch": 1, "step": 10, "loss": 2.1, "lr": 0.01, "images_per_s": 850.0},
    {"kind": "train", "epoch": 1, "step": 20, "loss": 1.8, "lr": 0.01, "images_per_s": 870.0},
    {"kind": "val", "epoch": 1, "step": 20, "loss": 1.9, "top1_err": 0.61, "top5_err": 0.2},
    {"kind": "train", "epoch": 2, "step": 30, "loss": 1.5, "lr": 0.001, "images_per_s": 860.0},
    {"kind": "val", "epoch": 2, "step": 40, "loss": 1.6, "top1_err": 0.5, "top5_err": 0.1},
]


def test_conv1_grid_puts_each_tower_in_its_own_block() -> None:
    weight = torch.randn(96, 3, 11, 11, generator=torch.Generator().manual_seed(0))
    grid = conv1_grid(weight, towers=2)
    # 3 rows of 16 cells per tower + one blank row between; cells are 11 px + 1 px gap.
    assert grid.shape == (7 * 12, 16 * 12, 3)
    for index, (row, col) in {0: (0, 0), 17: (1, 1), 47: (2, 15), 48: (4, 0), 95: (6, 15)}.items():
        f = weight[index].numpy().transpose(1, 2, 0)
        expected = (f - f.min()) / (f.max() - f.min())
        np.testing.assert_allclose(grid[row * 12:row * 12 + 11, col * 12:col * 12 + 11],
                                   expected, rtol=1e-5, atol=1e-6)
    assert np.all(grid[3 * 12:4 * 12] == 1.0)  # the blank row separating the towers


def test_conv1_grid_single_tower_and_constant_filter() -> None:
    weight = torch.zeros(64, 3, 11, 11)
    grid = conv1_grid(weight, towers=1)
    assert grid.shape == (4 * 12, 16 * 12, 3)
    assert np.all(grid[:11, :11] == 0.5)  # a flat filter shows as mid grey, not NaN


def test_curves_png_from_metrics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    records = read_metrics(path)
    assert len(records) == 5
    out = plot_curves(records, tmp_path / "curves.png")
    with Image.open(out) as image:
        assert image.size == (1500, 400)


def test_bad_metrics_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(METRICS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:2"):
        read_metrics(path)


def test_nearest_neighbours_hand_checked() -> None:
    bank = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    queries = torch.tensor([[0.9, 0.9], [9.0, 0.0]])
    distances, indices = nearest_neighbours(queries, bank, k=2)
    assert indices.tolist() == [[3, 0], [1, 3]]
    np.testing.assert_allclose(distances[1].numpy(), [1.0, np.hypot(8, 1)])


def test_plot_neighbours_places_the_right_images(tmp_path: Path) -> None:
    queries = np.full((2, 4, 4, 3), 7, np.uint8)
    bank = np.arange(5, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)
    out = plot_neighbours(queries, bank, torch.tensor([[4, 2], [0, 1]]), tmp_path / "nn.png")
    canvas = np.asarray(Image.open(out))
    assert canvas.shape == (2 * 12, 3 * 12 + 8, 3)
    assert canvas[12, 0, 0] == 7 and canvas[0, 12 + 8, 0] == 4 and canvas[0, 24 + 8, 0] == 2
    assert canvas[12, 12 + 8, 0] == 0 and canvas[12, 24 + 8, 0] == 1


@pytest.fixture(scope="module")
def run_dir(shard_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(data=str(shard_dataset), model=ModelConfig(num_classes=4, init="he"))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    save_checkpoint(run, new_state(model=model.state_dict(), config=cfg, epoch=1, global_step=3),
                    keep=1)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    return run


def test_fc7_features_belong_to_the_returned_crops(run_dir: Path, shard_dataset: Path) -> None:
    from alexnet_dali.figures import load_run_model

    model, cfg = load_run_model(run_dir)
    feats, crops = fc7_of_split(model, shard_dataset, "val", 3, cfg, torch.device("cpu"))
    assert feats.shape == (3, 4096) and crops.shape == (3, 224, 224, 3)
    mean = json.loads((shard_dataset / "pca.json").read_text())["mean"]  # channel mean, 0-255
    x = torch.from_numpy(crops).float().sub(torch.tensor(mean)).permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), feats, rtol=1e-3, atol=1e-3)


def test_make_figures_writes_all_three(run_dir: Path) -> None:
    paths = make_figures(run_dir, queries=2, neighbours=3, train_images=12)
    assert [p.name for p in paths] == ["curves.png", "conv1_filters.png", "fc7_neighbours.png"]
    with Image.open(paths[1]) as image:
        assert image.size == (16 * 12 * 4, 7 * 12 * 4)
    with Image.open(paths[2]) as image:
        assert image.size == (4 * 232 + 8, 2 * 232)


def test_make_figures_on_an_empty_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="metrics.jsonl"):
        make_figures(tmp_path)
