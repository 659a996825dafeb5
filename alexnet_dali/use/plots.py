"""Drawing a run's figures: each function takes plain data and returns a matplotlib Figure.

Returning the Figure (nothing is written here) lets tests check what was drawn: panel titles,
axis labels, which series and with which markers. `save_figure` writes a PNG. Figures are made
with `matplotlib.figure.Figure` directly, not pyplot: no global state, no GUI backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported inside the functions: `alexnet-dali --help` stays fast
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MARKER_LIMIT = 60  # series this short get a marker per point (a single point shows only so)
EPOCH_TICKS = 12  # at most this many epoch labels on the top axis
QUERY_COLOUR, SAME_COLOUR, OTHER_COLOUR = "tab:blue", "tab:green", "tab:red"

TRAIN_LOSS = "train (mean since the previous point)"  # a point per sync point (log_every)


def series(records: list[dict[str, Any]], kind: str, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key` in the metrics records of `kind` ("train" or "val")."""
    points = [(r["step"], r[key]) for r in records if r["kind"] == kind and key in r]
    return [p[0] for p in points], [p[1] for p in points]


def _line(ax: Axes, xs: list[float], ys: list[float], label: str, **style: Any) -> None:
    if xs:
        ax.plot(xs, ys, marker="o" if len(xs) <= MARKER_LIMIT else None, markersize=4,
                label=label, **style)


def _epoch_axis(ax: Axes, records: list[dict[str, Any]]) -> None:
    """Steps on the bottom axis, 0 to the last step; epoch ends (val records) on the top."""
    ends = {r["step"]: r["epoch"] for r in records if r["kind"] == "val"}
    last = max((r["step"] for r in records), default=1)
    ax.set_xlim(0, max(last, 1) * 1.04)
    ax.set_xlabel("optimiser step (one batch)")
    if ends:
        top = ax.secondary_xaxis("top")
        stride = -(-len(ends) // EPOCH_TICKS)
        steps = sorted(ends)[stride - 1::stride]
        top.set_xticks(steps, labels=[str(ends[s]) for s in steps])
        top.set_xlabel("end of epoch", fontsize=9)


def draw_curves(records: list[dict[str, Any]], *, classes: int | None = None,
                title: str = "training curves") -> Figure:
    """Loss, val error and learning rate against the step; panels with nothing to show are
    left out (top-5 error with <= 5 classes, the lr panel when no lr was logged)."""
    from matplotlib.figure import Figure

    has_lr = bool(series(records, "train", "lr")[0])
    has_val = bool(series(records, "val", "top1_err")[0])
    panels = ["loss"] + (["error"] if has_val else []) + (["lr"] if has_lr else [])
    fig = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    axes = dict(zip(panels, fig.subplots(1, len(panels), squeeze=False)[0]))
    fig.suptitle(title)
    ax = axes["loss"]
    _line(ax, *series(records, "train", "loss"), TRAIN_LOSS, alpha=0.8)
    _line(ax, *series(records, "val", "loss"), "val (whole split)")
    ax.set_title("loss")
    ax.set_ylabel("cross-entropy loss (nats)")
    if "error" in axes:
        _draw_errors(axes["error"], records, classes)
    if "lr" in axes:
        ax = axes["lr"]
        steps, lrs = series(records, "train", "lr")
        _line(ax, steps, lrs, "learning rate", drawstyle="steps-post")  # set per epoch
        if all(v > 0 for v in lrs):  # drops by 10: a log axis, a decade at least
            ax.set_yscale("log")
            ax.set_ylim(min(lrs) / 3, max(lrs) * 3)
        ax.set_title("learning rate")
        ax.set_ylabel("learning rate (weights)")
    for ax in axes.values():
        _epoch_axis(ax, records)
        ax.grid(alpha=0.3)
        if len(ax.get_legend_handles_labels()[0]) > 1:  # one series: the title names it
            ax.legend(fontsize=9)
    return fig


def _draw_errors(ax: Axes, records: list[dict[str, Any]], classes: int | None) -> None:
    _line(ax, *series(records, "val", "top1_err"), "val top-1 error")
    title = "validation error"
    if classes is None or classes > 5:
        _line(ax, *series(records, "val", "top5_err"), "val top-5 error")
    else:
        title += f" (top-5 not shown: {classes} classes)"
    if classes:
        ax.axhline(1 - 1 / classes, color="grey", linestyle="--", linewidth=1,
                   label=f"chance top-1 ({1 - 1 / classes:.3g})")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.set_ylabel("error (fraction of val images)")


def draw_conv1(towers: Sequence[np.ndarray], *, title: str) -> Figure:
    """One panel per tower: its filters as an HWC float image in [0, 1] (`figures.conv1_grid`)."""
    from matplotlib.figure import Figure

    height, width = towers[0].shape[:2]
    panel_h = 8 * height / width
    fig = Figure(figsize=(8.4, 0.9 + (panel_h + 0.3) * len(towers)), layout="constrained")
    fig.suptitle(title)
    for number, (ax, grid) in enumerate(zip(fig.subplots(len(towers), 1, squeeze=False)[:, 0],
                                            towers), 1):
        ax.imshow(grid, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if len(towers) > 1:
            ax.set_title(f"tower {number} (the paper's GPU {number})", fontsize=10)
    fig.supxlabel("each filter min-max scaled to [0, 1] on its own: contrast is not comparable "
                  "between filters", fontsize=9)
    return fig


def draw_neighbours(queries: np.ndarray, bank: np.ndarray, indices: np.ndarray,
                    query_labels: Sequence[int], bank_labels: Sequence[int],
                    class_names: Sequence[str]) -> Figure:
    """A row per query: the query crop (framed, left) and its bank neighbours, nearest first;
    class name under each image, green when it is the query's class, red otherwise.

    queries Q×H×W×3 uint8, bank B×H×W×3 uint8, indices Q×k bank rows."""
    from matplotlib.figure import Figure

    q, k = indices.shape
    fig = Figure(figsize=(max(1.45 * (k + 1) + 0.3, 6.4), 1.75 * q + 1.1), layout="constrained")
    fig.suptitle(f"fc7 nearest neighbours (paper Fig. 4)\nleft, framed: a val image; right: the "
                 f"{k} train images nearest to it in fc7 (Euclidean)\nclass names in green: the "
                 "val image's class; in red: another class", fontsize=9)
    grid = fig.subplots(q, k + 2, squeeze=False, width_ratios=[1, 0.08] + [1] * k)
    for row in range(q):
        grid[row, 1].set_axis_off()  # a narrow gap after the query column
        query_class = int(query_labels[row])
        _image(grid[row, 0], queries[row], class_names[query_class], QUERY_COLOUR, frame=True)
        for col, index in enumerate(indices[row].tolist()):
            label = int(bank_labels[index])
            _image(grid[row, col + 2], bank[index], class_names[label],
                   SAME_COLOUR if label == query_class else OTHER_COLOUR)
    grid[0, 0].set_title("val image", fontsize=9, color=QUERY_COLOUR)
    for col in range(k):
        grid[0, col + 2].set_title(f"neighbour {col + 1}", fontsize=9)
    return fig


def _image(ax: Axes, image: np.ndarray, label: str, colour: str, frame: bool = False) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(label, fontsize=8, color=colour)
    for spine in ax.spines.values():
        spine.set_visible(frame)
        spine.set_color(colour)
        spine.set_linewidth(3)


def save_figure(fig: Figure, out: Path, dpi: int = 100) -> Path:
    """Write `fig` as a PNG at `out`."""
    fig.savefig(out, dpi=dpi)
    return out
