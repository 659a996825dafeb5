"""Figures: the conv1 grid layout, what each figure draws (checked on the returned matplotlib
Figure: panels, titles, labels, markers, images and their class names), fc7 neighbours end to
end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_dali.model.checkpoint import new_state, save_checkpoint
from alexnet_dali.config.schema import ModelConfig, TrainConfig
from alexnet_dali.errors import DataError
from alexnet_dali.use.figures import conv1_grid, fc7_of_split, make_figures, nearest_neighbours
from alexnet_dali.train.runlog import read_metrics
from alexnet_dali.model.alexnet import build_model
from alexnet_dali.use.plots import TRAIN_LOSS, draw_conv1, draw_curves, draw_neighbours

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


def panels(fig) -> dict:
    """The figure's panels by title."""
    return {ax.get_title(): ax for ax in fig.axes}


def lines(ax) -> dict:
    """The panel's plotted series by legend label (ax.lines also holds the chance line)."""
    return {line.get_label(): line for line in ax.get_lines()}


def test_curves_draw_labelled_panels_from_metrics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    records = read_metrics(path)
    assert len(records) == 5
    fig = draw_curves(records, classes=10, title="training curves of run")
    assert fig.get_suptitle() == "training curves of run"
    loss, err, lr = (panels(fig)[t] for t in ("loss", "validation error", "learning rate"))
    assert set(lines(loss)) == {TRAIN_LOSS, "val (whole split)"}
    assert lines(loss)[TRAIN_LOSS].get_xydata().tolist() == [[10, 2.1], [20, 1.8],
                                                                       [30, 1.5]]
    assert set(lines(err)) == {"val top-1 error", "val top-5 error", "chance top-1 (0.9)"}
    assert lines(err)["val top-5 error"].get_ydata().tolist() == [0.2, 0.1]
    assert lr.get_yscale() == "log"
    assert lines(lr)["learning rate"].get_ydata().tolist() == [0.01, 0.01, 0.001]
    for ax in (loss, err, lr):
        assert ax.get_ylabel() and ax.get_xlabel() == "optimiser step (one batch)"
        assert (ax.get_legend() is not None) == (ax is not lr)  # one series: no legend
        assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] >= 40
        top = ax.child_axes[0]  # epoch ends on a second x axis
        assert [t.get_text() for t in top.get_xticklabels()] == ["1", "2"]


def test_one_epoch_curves_show_single_points_and_skip_empty_panels() -> None:
    """A one-epoch run of 4 classes without lr lines: every series still shows (a marker per
    point), the x axis runs from 0, no top-5 line (always 0 with <= 5 classes), no lr panel."""
    records = [{"kind": "train", "epoch": 1, "step": 3, "loss": 1.4},
               {"kind": "val", "epoch": 1, "step": 3, "loss": 1.38, "top1_err": 0.75,
                "top5_err": 0.0}]
    fig = draw_curves(records, classes=4)
    assert set(panels(fig)) == {"loss", "validation error (top-5 not shown: 4 classes)"}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("chance"):
                assert line.get_marker() == "o" and len(line.get_xdata()) == 1
        assert ax.get_xlim() == (0, pytest.approx(3 * 1.04))
    err = panels(fig)["validation error (top-5 not shown: 4 classes)"]
    assert set(lines(err)) == {"val top-1 error", "chance top-1 (0.75)"}
    assert list(lines(err)["chance top-1 (0.75)"].get_ydata()) == [0.75, 0.75]


def test_long_series_are_lines_without_markers() -> None:
    records = [{"kind": "train", "epoch": 1, "step": s, "loss": 1.0, "lr": 0.01}
               for s in range(1, 201)]
    fig = draw_curves(records)
    assert set(panels(fig)) == {"loss", "learning rate"}  # no val records: no error panel
    assert lines(panels(fig)["loss"])[TRAIN_LOSS].get_marker() in ("None", None, "")
    lr = panels(fig)["learning rate"]
    assert lr.get_yscale() == "log" and lr.get_ylim() == pytest.approx((0.01 / 3, 0.03))


def test_conv1_figure_names_the_towers_and_the_normalisation() -> None:
    grids = [np.full((36, 192, 3), t / 2, np.float32) for t in range(2)]
    fig = draw_conv1(grids, title="conv1 filters")
    assert [ax.get_title() for ax in fig.axes] == ["tower 1 (the paper's GPU 1)",
                                                   "tower 2 (the paper's GPU 2)"]
    for ax, grid in zip(fig.axes, grids):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), grid)
    assert fig.get_suptitle() == "conv1 filters"
    assert "min-max scaled to [0, 1] on its own" in fig.get_supxlabel()
    one = draw_conv1(grids[:1], title="owt")
    assert [ax.get_title() for ax in one.axes] == [""]  # one tower: nothing to tell apart


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


def test_neighbours_figure_marks_the_query_and_names_every_class() -> None:
    queries = np.full((2, 4, 4, 3), 7, np.uint8)
    bank = np.arange(5, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)
    fig = draw_neighbours(queries, bank, np.array([[4, 2], [0, 1]]), query_labels=[0, 1],
                          bank_labels=[2, 1, 0, 2, 0], class_names=["cat", "dog", "eel"])
    rows = np.array(fig.axes).reshape(2, 4)  # query, gap, neighbour 1, neighbour 2
    assert rows[0, 0].get_title() == "val image"
    assert [ax.get_title() for ax in rows[0, 2:]] == ["neighbour 1", "neighbour 2"]
    assert "Fig. 4" in fig.get_suptitle()
    expected = {(0, 0): (7, "cat"), (0, 2): (4, "cat"), (0, 3): (2, "cat"),
                (1, 0): (7, "dog"), (1, 2): (0, "eel"), (1, 3): (1, "dog")}
    for (row, col), (value, name) in expected.items():
        ax = rows[row, col]
        assert np.all(ax.get_images()[0].get_array() == value)
        assert ax.get_xlabel() == name
    assert not rows[0, 1].axison and not rows[0, 1].get_images()  # the gap column is empty
    # The query is framed; a neighbour's name is green for the query's class, red otherwise.
    assert rows[0, 0].spines["left"].get_visible() and not rows[0, 2].spines["left"].get_visible()
    colour = {(r, c): rows[r, c].xaxis.label.get_color() for r, c in expected}
    assert colour[0, 2] == colour[0, 3] == colour[1, 3] == "tab:green"
    assert colour[1, 2] == "tab:red"


@pytest.fixture(scope="module")
def run_dir(shard_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(data=str(shard_dataset), model=ModelConfig(num_classes=4, init="he"))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    save_checkpoint(run, new_state(model=model.state_dict(), config=cfg, epoch=1, global_step=3),
                    keep=1)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    yield run
    shutil.rmtree(run)  # 0.23 GB: not kept for the rest of the session


def test_fc7_features_belong_to_the_returned_crops(run_dir: Path, shard_dataset: Path) -> None:
    from alexnet_dali.use.figures import load_run_model
    from alexnet_dali.tools.shards import read_index

    model, cfg, _ = load_run_model(run_dir)
    feats, crops, labels = fc7_of_split(model, shard_dataset, "val", 3, cfg,
                                        torch.device("cpu"))
    assert feats.shape == (3, 4096) and crops.shape == (3, 224, 224, 3)
    mean = json.loads((shard_dataset / "pca.json").read_text())["mean"]  # channel mean, 0-255
    x = torch.from_numpy(crops).float().sub(torch.tensor(mean)).permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), feats, rtol=1e-3, atol=1e-3)
    # The labels are the first val samples' .cls members, in shard order.
    index = sorted((shard_dataset / "val").glob("*.idx"))[0]
    tar = index.with_suffix(".tar").read_bytes()
    expected = [int(tar[s["cls"].offset:s["cls"].offset + s["cls"].size])
                for s in read_index(index)[:3]]
    assert labels.tolist() == expected


def test_make_figures_writes_all_three(run_dir: Path) -> None:
    said: list[str] = []
    paths = make_figures(run_dir, queries=2, neighbours=3, train_images=12, log=said.append)
    assert [p.name for p in paths] == ["curves.png", "conv1_filters.png", "fc7_neighbours.png"]
    assert [line.split(":")[0] for line in said] == [f"wrote {p}" for p in paths]
    for path in paths:
        with Image.open(path) as image:
            assert min(image.size) > 300, path.name


def test_class_names_come_from_the_manifest(shard_dataset: Path) -> None:
    from alexnet_dali.use.figures import class_names
    from alexnet_dali.tools.manifest import read_manifest

    words = [c.words for c in read_manifest(shard_dataset).classes]
    assert class_names(shard_dataset) == words == ["disc", "square", "triangle", "cross"]


def test_the_conv1_title_says_early_filters_look_like_noise(run_dir: Path) -> None:
    from alexnet_dali.use.figures import EARLY_EPOCHS, conv1_figure, load_run_model

    model, cfg, state = load_run_model(run_dir)
    early = conv1_figure(model, cfg, state, run_dir).get_suptitle()
    assert "epoch 1, step 3\nafter so few epochs the filters still look like noise" in early
    late = conv1_figure(model, cfg, {**state, "epoch": EARLY_EPOCHS}, run_dir).get_suptitle()
    assert "noise" not in late and late.endswith(f"epoch {EARLY_EPOCHS}, step 3")


def test_make_figures_on_an_empty_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a training run"):
        make_figures(tmp_path)
    assert not (tmp_path / "figures").exists()


def test_figures_cli_on_a_non_run_folder_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "alexnet_dali.cli", "figures", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {tmp_path}: not a training run (neither metrics.jsonl nor "
        "checkpoints/ckpt-*.pt); pass the --run-dir of `alexnet-dali train`"]
