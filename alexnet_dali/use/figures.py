"""Pictures of a run: training curves, the conv1 filters (paper Fig. 3), fc7 neighbours (Fig. 4).

`make_figures(RUN)` writes into RUN/figures:
- `curves.png` from RUN/metrics.jsonl: loss (train and val), val top-1/top-5 error (top-5 only
  with more than 5 classes) with the chance level, learning rate (when logged);
- `conv1_filters.png`: the 96 11×11×3 filters of the newest checkpoint, each min-max scaled to
  [0, 1] on its own, 16 a row, tower 1's 48 above tower 2's 48 (as the paper's Fig. 3); before
  `EARLY_EPOCHS` its title says that filters so early look like noise;
- `fc7_neighbours.png`: a few val images (first column, framed) and the train images whose fc7
  activations are nearest in Euclidean distance (Fig. 4, right), each with its class name, when
  the shards are at hand.
The drawing itself is in `plots.py`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from alexnet_dali.config.schema import ARCHITECTURES
from alexnet_dali.errors import DataError
from alexnet_dali.loader.data import ShardData, open_shards
from alexnet_dali.use.plots import draw_conv1, draw_curves, draw_neighbours, save_figure
from alexnet_dali.train.runlog import METRICS_NAME, read_metrics

if TYPE_CHECKING:  # torch is imported inside the functions: `alexnet-dali --help` stays fast
    import torch
    from matplotlib.figure import Figure

FILTERS_PER_ROW = 16
# Before this many epochs the conv1 figure says that noise-like filters are expected (the paper's
# Fig. 3 is after 90 epochs of ImageNet; the demo's 6 epochs on 256 images show noise).
EARLY_EPOCHS = 20




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


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor,
                       k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features Q×D and B×D → (distances Q×k, bank indices Q×k), nearest first (Euclidean)."""
    import torch

    distances = torch.cdist(queries.double(), bank.double())
    result = distances.topk(min(k, bank.shape[0]), dim=1, largest=False)
    return result.values, result.indices


def fc7_of_split(model: torch.nn.Module, data_dir: Path | ShardData, split: str, limit: int,
                 cfg: Any, device: torch.device,
                 progress: Any = None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The first `limit` samples of `split`: fc7 features N×4096 (float32, CPU), center crops
    N×224×224×3 uint8 (the decoded shard image, cropped as the eval pipeline crops) and labels
    int64 N. `progress` (a tqdm bar) advances by the images done."""
    import dataclasses

    import torch

    from alexnet_dali.loader.eval import build_eval_loader

    loader_cfg = dataclasses.replace(cfg.loader, layout="NCHW", dtype="float32")
    loader = build_eval_loader(data_dir, split=split, loader=loader_cfg, augment=cfg.augment,
                               batch_size=min(32, limit), rank=0, world_size=1, device=device,
                               return_draws=True)
    wanted = min(limit, loader.rank_samples)
    start = (256 - cfg.augment.crop) // 2  # shard images are 256×256; eval takes the center
    feats, crops, labels = [], [], []
    done = 0
    while done < wanted:
        images, batch_labels, decoded = loader.run_with_draws()[:3]
        with torch.no_grad():
            feats.append(model.features(images.to(device)).float().cpu())
        end = start + cfg.augment.crop
        crops.append(decoded[:, start:end, start:end].cpu().numpy())
        labels.append(batch_labels.cpu().numpy().reshape(-1))
        if progress is not None:
            progress.update(min(len(images), wanted - done))
        done += len(images)
    return torch.cat(feats)[:wanted], np.concatenate(crops)[:wanted], \
        np.concatenate(labels)[:wanted].astype(np.int64)


def load_run_model(run_dir: Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The newest checkpoint's model (grouped, CPU, eval mode), its TrainConfig and the
    checkpoint itself."""
    from alexnet_dali.model.checkpoint import load_checkpoint, model_from_checkpoint

    state = load_checkpoint(run_dir)
    model, cfg = model_from_checkpoint(state)
    return model, cfg, state


def class_names(data_dir: Path | ShardData) -> list[str]:
    """A short display name per class id: the manifest's words (up to the first comma), else
    its name (WNID or folder), else the id."""
    names = []
    for entry in sorted(open_shards(data_dir).manifest.classes, key=lambda c: c.id):
        names.append(entry.words.split(",")[0].strip() or entry.name or str(entry.id))
    return names


def conv1_figure(model: torch.nn.Module, cfg: Any, state: dict[str, Any],
                 run_dir: Path) -> Figure:
    """conv1's filters, one panel per tower (paper Fig. 3)."""
    weight = model.conv1.weight
    towers = cfg.model.towers if ARCHITECTURES[cfg.model.arch].towers else 1
    per_tower = weight.shape[0] // towers
    grids = [conv1_grid(weight[t * per_tower:(t + 1) * per_tower], 1) for t in range(towers)]
    k, c, h, w = weight.shape
    title = (f"conv1: the {k} learned {h}×{w}×{c} filters (paper Fig. 3) of {run_dir.name}, "
             f"epoch {state['epoch']}, step {state['global_step']}")
    if state["epoch"] < EARLY_EPOCHS:
        title += ("\nafter so few epochs the filters still look like noise, as expected: the "
                  "paper's edges and colour blobs\ncome after tens of ImageNet epochs")
    return draw_conv1(grids, title=title)


def neighbours_figure(model: torch.nn.Module, cfg: Any, data: Path | ShardData, queries: int,
                      neighbours: int, train_images: int, progress: bool) -> tuple[Figure, str]:
    """fc7 nearest neighbours of the first `queries` val images among the first `train_images`
    train images (paper Fig. 4), and a line saying so."""
    import torch
    from tqdm import tqdm

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    data = open_shards(data)  # read once: the splits, both loaders, the class names
    splits = data.manifest.splits
    total = sum(min(n, splits[s].samples if s in splits else 0)
                for s, n in (("val", queries), ("train", train_images)))
    with tqdm(total=total, unit="img", desc="fc7 features", disable=not progress,
              leave=False) as bar:
        val_feats, val_crops, val_labels = fc7_of_split(model, data, "val", queries, cfg, device,
                                                        bar)
        bank, bank_crops, bank_labels = fc7_of_split(model, data, "train", train_images, cfg,
                                                     device, bar)
    _, indices = nearest_neighbours(val_feats, bank, neighbours)
    fig = draw_neighbours(val_crops, bank_crops, indices.numpy(), val_labels, bank_labels,
                          class_names(data))
    return fig, (f"{len(val_feats)} val images x {indices.shape[1]} fc7 neighbours among the "
                 f"first {len(bank)} train images of {data}")


def make_figures(run_dir: str | Path, data_dir: str | Path | None = None,
                 out_dir: str | Path | None = None, *, queries: int = 5, neighbours: int = 6,
                 train_images: int = 1024, progress: bool = False,
                 log: Callable[[str], Any] = lambda line: None) -> list[Path]:
    """Write the run's figures (those its files allow) into out_dir (RUN/figures); their paths.

    `log` gets a line per figure as it is written (and why one is skipped)."""
    from alexnet_dali.model.checkpoint import latest_checkpoint
    from alexnet_dali.tools.manifest import MANIFEST_NAME

    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_NAME
    has_checkpoint = latest_checkpoint(run_dir) is not None
    if not metrics.is_file() and not has_checkpoint:
        raise DataError(f"{run_dir}: not a training run (neither metrics.jsonl nor "
                        "checkpoints/ckpt-*.pt); pass the --run-dir of `alexnet-dali train`")
    out = Path(out_dir) if out_dir else run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    model = cfg = state = None
    if has_checkpoint:
        model, cfg, state = load_run_model(run_dir)
    written = []

    def save(fig: Figure, what: str, name: str) -> None:
        written.append(save_figure(fig, out / name))
        log(f"wrote {out / name}: {what}")

    if metrics.is_file():
        records = read_metrics(metrics)
        classes = cfg.model.num_classes if cfg else None
        save(draw_curves(records, classes=classes, title=f"training curves of {run_dir.name}"),
             f"loss, val error, lr from {len(records)} metric lines", "curves.png")
    if state is None:
        log(f"{run_dir}: no checkpoint yet, so no conv1 filters and no fc7 neighbours")
        return written
    save(conv1_figure(model, cfg, state, run_dir), f"conv1 filters of {state['path']}",
         "conv1_filters.png")
    data = Path(data_dir or cfg.data)
    if (data / MANIFEST_NAME).is_file():
        save(*neighbours_figure(model, cfg, data, queries, neighbours, train_images, progress),
             name="fc7_neighbours.png")
    else:
        log(f"{data}: no {MANIFEST_NAME}, so no fc7 neighbours figure (pass --data SHARDS)")
    return written
