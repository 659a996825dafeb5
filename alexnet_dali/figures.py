"""Pictures of a run: training curves, the conv1 filters (paper Fig. 3), fc7 neighbours (Fig. 4).

`make_figures(RUN)` writes into RUN/figures:
- `curves.png` from RUN/metrics.jsonl: loss (train and val), val top-1/top-5 error, learning rate;
- `conv1_filters.png`: the 96 11×11×3 filters of the newest checkpoint, each scaled to [0, 1],
  16 a row, tower 1's 48 above tower 2's 48 (as the paper's Fig. 3);
- `fc7_neighbours.png`: a few val images (first column) and the train images whose fc7
  activations are nearest in Euclidean distance (Fig. 4, right), when the shards are at hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from alexnet_dali.errors import DataError, report_user_errors
from alexnet_dali.runlog import METRICS_NAME, read_metrics

if TYPE_CHECKING:  # torch is imported inside the functions: `alexnet-dali --help` stays fast
    import torch

FILTERS_PER_ROW = 16


def _series(records: list[dict], kind: str, key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in records if r["kind"] == kind and key in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(records: list[dict[str, Any]], out: Path) -> Path:
    """Loss, val error and lr against the global step → PNG at `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_err, ax_lr) = plt.subplots(1, 3, figsize=(15, 4))
    for kind, style in (("train", "-"), ("val", "o-")):
        ax_loss.plot(*_series(records, kind, "loss"), style, label=f"{kind} loss")
    for key in ("top1_err", "top5_err"):
        ax_err.plot(*_series(records, "val", key), "o-", label=f"val {key}")
    ax_lr.plot(*_series(records, "train", "lr"), "-", label="lr")
    if any(v > 0 for v in _series(records, "train", "lr")[1]):
        ax_lr.set_yscale("log")
    for ax, title in ((ax_loss, "loss"), (ax_err, "validation error"), (ax_lr, "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def conv1_grid(weight: torch.Tensor, towers: int) -> np.ndarray:
    """conv1 weight K×3×h×w → image HWC float32 in [0, 1]: one filter a cell, towers stacked.

    Each filter is min-max scaled on its own; tower t's filters fill rows of 16 cells, and one
    blank cell-row separates the towers.
    """
    w = weight.detach().float().cpu().numpy()
    k, _, h, wd = w.shape
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - lo
    w = np.where(span > 0, (w - lo) / np.where(span > 0, span, 1), 0.5).transpose(0, 2, 3, 1)
    per_tower = k // towers
    rows = math.ceil(per_tower / FILTERS_PER_ROW)
    cell_h, cell_w = h + 1, wd + 1  # one pixel of gap after each cell
    grid = np.ones(((rows * towers + towers - 1) * cell_h, FILTERS_PER_ROW * cell_w, 3),
                   np.float32)
    for i in range(k):
        tower, j = divmod(i, per_tower)
        r = tower * (rows + 1) + j // FILTERS_PER_ROW
        c = j % FILTERS_PER_ROW
        grid[r * cell_h:r * cell_h + h, c * cell_w:c * cell_w + wd] = w[i]
    return grid


def save_image(image: np.ndarray, out: Path, scale: int = 1) -> Path:
    """HWC float in [0, 1] or uint8 → PNG, enlarged `scale` times with nearest neighbour."""
    from PIL import Image

    if image.dtype != np.uint8:
        image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    picture = Image.fromarray(image)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    picture.save(out)
    return out


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor,
                       k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features Q×D and B×D → (distances Q×k, bank indices Q×k), nearest first (Euclidean)."""
    import torch

    distances = torch.cdist(queries.double(), bank.double())
    result = distances.topk(min(k, bank.shape[0]), dim=1, largest=False)
    return result.values, result.indices


def fc7_of_split(model: torch.nn.Module, data_dir: Path, split: str, limit: int, cfg: Any,
                 device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """The first `limit` samples of `split`: fc7 features N×4096 (float32, CPU), center crops
    N×224×224×3 uint8 (the decoded shard image, cropped as the eval pipeline crops)."""
    import dataclasses

    import torch

    from alexnet_dali.loader import build_eval_loader

    loader_cfg = dataclasses.replace(cfg.loader, layout="NCHW", dtype="float32")
    loader = build_eval_loader(data_dir, split=split, loader=loader_cfg, augment=cfg.augment,
                               batch_size=min(32, limit), rank=0, world_size=1, device=device,
                               return_draws=True)
    wanted = min(limit, loader.rank_samples)
    start = (256 - cfg.augment.crop) // 2  # shard images are 256×256; eval takes the center
    feats, crops = [], []
    while sum(len(f) for f in feats) < wanted:
        images, _, decoded = loader.run_with_draws()[:3]
        with torch.no_grad():
            feats.append(model.features(images.to(device)).float().cpu())
        end = start + cfg.augment.crop
        crops.append(decoded[:, start:end, start:end].cpu().numpy())
    return torch.cat(feats)[:wanted], np.concatenate(crops)[:wanted]


def plot_neighbours(queries: np.ndarray, bank: np.ndarray, indices: torch.Tensor,
                    out: Path) -> Path:
    """Query crops Q×H×W×3 and their neighbours' bank rows → one PNG, a query per row."""
    q, k = indices.shape
    h, w = queries.shape[1:3]
    gap = 8
    canvas = np.full((q * (h + gap), (k + 1) * (w + gap) + gap, 3), 255, np.uint8)
    for row in range(q):
        y = row * (h + gap)
        canvas[y:y + h, :w] = queries[row]
        for col, index in enumerate(indices[row].tolist(), 1):
            x = col * (w + gap) + gap
            canvas[y:y + h, x:x + w] = bank[index]
    return save_image(canvas, out)


def load_run_model(run_dir: Path) -> tuple[torch.nn.Module, Any]:
    """The newest checkpoint's model (grouped, CPU, eval mode) and its TrainConfig."""
    from alexnet_dali.checkpoint import load_checkpoint, model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(run_dir))


def make_figures(run_dir: str | Path, data_dir: str | Path | None = None,
                 out_dir: str | Path | None = None, *, queries: int = 5, neighbours: int = 6,
                 train_images: int = 1024) -> list[Path]:
    """Write the run's figures (those its files allow) into out_dir (RUN/figures); their paths."""
    import torch

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    metrics = run_dir / METRICS_NAME
    if metrics.is_file():
        written.append(plot_curves(read_metrics(metrics), out / "curves.png"))
    from alexnet_dali.checkpoint import latest_checkpoint

    if latest_checkpoint(run_dir) is None:
        if not written:
            raise DataError(f"{run_dir}: neither metrics.jsonl nor checkpoints/ckpt-*.pt; "
                            "pass the run dir of `alexnet-dali train`")
        return written
    model, cfg = load_run_model(run_dir)
    towers = cfg.model.towers if cfg.model.arch == "paper" else 1
    written.append(save_image(conv1_grid(model.conv1.weight, towers), out / "conv1_filters.png",
                              scale=4))
    from alexnet_dali.tools.manifest import MANIFEST_NAME

    data = Path(data_dir or cfg.data)
    if (data / MANIFEST_NAME).is_file():
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        val_feats, val_crops = fc7_of_split(model, data, "val", queries, cfg, device)
        bank, bank_crops = fc7_of_split(model, data, "train", train_images, cfg, device)
        _, indices = nearest_neighbours(val_feats, bank, neighbours)
        written.append(plot_neighbours(val_crops, bank_crops, indices, out / "fc7_neighbours.png"))
    else:
        click.echo(f"{data}: no {MANIFEST_NAME}, skipping the fc7 neighbours figure "
                   "(pass --data SHARDS)", err=True)
    return written


@click.command(
    "figures",
    short_help="Training curves, conv1 filter grid (Fig. 3), fc7 neighbours (Fig. 4).")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False),
              help="Shard folder for the fc7 neighbours (default: the run's own data).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where the PNGs go (default: RUN/figures).")
@click.option("--queries", default=5, show_default=True,
              help="Val images in the neighbours figure.")
@click.option("--neighbours", default=6, show_default=True, help="Train neighbours per val image.")
@click.option("--train-images", default=1024, show_default=True,
              help="How many train images (from the start of the split) to search.")
@report_user_errors
def figures_command(run_dir: str, data_dir: str | None, out_dir: str | None, queries: int,
                    neighbours: int, train_images: int) -> None:
    """Training curves, conv1 filters (Fig. 3) and fc7 nearest neighbours (Fig. 4) of a run.

    \b
    Example:
      alexnet-dali figures runs/demo --data demo/shards
      # -> runs/demo/figures/{curves,conv1_filters,fc7_neighbours}.png
    """
    for path in make_figures(run_dir, data_dir, out_dir, queries=queries,
                             neighbours=neighbours, train_images=train_images):
        click.echo(str(path))
