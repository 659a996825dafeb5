"""`bench learn`: does a recipe learn, on data harder than the demo's? Printed side by side.

The data: `sample-data --kind hard` (16 shapes whose colour, rotation, scale and place are drawn
independently of the class), preprocessed once into WORKDIR and reused while its settings stay
the same. How hard it is, is measured first: a linear model (multinomial logistic regression,
its L2 weight chosen on a fifth of the train split held out) on the raw pixels of the
center-cropped images, downscaled to `LINEAR_SIDE`. Then each recipe trains the paper's network
for the same epochs on the same shards, and the val top-1 error after every epoch is printed
per recipe, next to chance.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

LINEAR_SIDE = 32  # the linear model sees 32x32x3 pixels (3,072 inputs per image)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class LearnData:
    """The generated dataset: what `sample-data --kind hard` and `preprocess` are given."""

    classes: int = 16
    train_per_class: int = 80
    val_per_class: int = 20
    min_side: int = 256
    max_side: int = 512
    size: int = 256
    seed: int = 0


def prepare_data(workdir: Path, data: LearnData, log: Callable[[str], None]) -> Path:
    """WORKDIR/shards for `data`, generated and preprocessed unless already there."""
    from alexnet_dali.tools.images import ImageSettings
    from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess
    from alexnet_dali.tools.sample_data import SampleDataConfig, write_sample_data

    stamp, shards = workdir / "data.json", workdir / "shards"
    wanted = json.dumps(asdict(data), sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted and (shards / "manifest.json").exists():
        log(f"data: {shards} (reused: the same settings)")
        return shards
    for old in (workdir / "raw", shards, stamp):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    started = time.perf_counter()
    write_sample_data(workdir / "raw", SampleDataConfig(
        data.classes, data.train_per_class, data.val_per_class, data.min_side, data.max_side,
        data.seed, kind="hard"))
    preprocess(workdir / "raw", shards, PreprocessConfig(image=ImageSettings(size=data.size),
                                                        seed=data.seed, workers=0),
               progress=False, notify=lambda _: None)
    stamp.write_text(wanted)
    log(f"data: {shards} ({data.classes} classes x {data.train_per_class} train / "
        f"{data.val_per_class} val images, generated and preprocessed in "
        f"{time.perf_counter() - started:.0f} s)")
    return shards


def split_pixels(shards: Path, split: str, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a split as raw pixels N x (side*side*3) float32, and its labels N."""
    from PIL import Image

    from alexnet_dali.tools.manifest import read_manifest
    from alexnet_dali.tools.shards import decode_label, iter_shard

    manifest = read_manifest(shards)
    pixels, labels = [], []
    for shard in manifest.split(split).shards:
        for _, members in iter_shard(manifest.url(shard.tar)):
            with Image.open(io.BytesIO(members["jpg"])) as img:
                small = img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
            pixels.append(np.asarray(small, dtype=np.float32).ravel())
            labels.append(decode_label(members["cls"]))
    return torch.from_numpy(np.stack(pixels)), torch.tensor(labels)


def fit_softmax(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float,
                iterations: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS: weights D x C and biases C."""
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    return float(((x @ w + b).argmax(1) == y).float().mean())


def linear_baseline(shards: Path, classes: int, side: int = LINEAR_SIDE,
                    seed: int = 0) -> dict[str, float]:
    """Train and val accuracy of the logistic regression on standardised raw pixels; its L2
    weight is the best of L2_GRID on a held-out fifth of the train split."""
    x_train, y_train = split_pixels(shards, "train", side)
    x_val, y_val = split_pixels(shards, "val", side)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))
    fit, held = order[: len(order) * 4 // 5], order[len(order) * 4 // 5:]
    scores = {l2: accuracy(x_train[held], y_train[held],
                           *fit_softmax(x_train[fit], y_train[fit], classes, l2))
              for l2 in L2_GRID}
    l2 = max(scores, key=scores.get)
    w, b = fit_softmax(x_train, y_train, classes, l2)
    return {"l2": l2, "train_acc": accuracy(x_train, y_train, w, b),
            "val_acc": accuracy(x_val, y_val, w, b), "side": side}


def load_recipes(spec: str) -> dict[str, dict[str, Any]]:
    """`paper,paper+short-run` -> {name: the merged values of its layered config files}."""
    from alexnet_dali.config.resolve import load_config_file, merge

    recipes = {}
    for name in (part.strip() for part in spec.split(",")):
        if not name:
            continue
        values: dict[str, Any] = {}
        for layer in name.split("+"):
            values = merge(values, load_config_file(layer))
        recipes[name] = values
    if not recipes:
        from alexnet_dali.errors import ConfigError

        raise ConfigError(f"--recipes {spec!r}: name at least one recipe, e.g. paper")
    return recipes


def train_recipe(values: dict[str, Any], name: str, shards: Path, run_dir: Path, *,
                 epochs: int, batch_size: int, threads: int, seed: int) -> dict[str, Any]:
    """Train one recipe from scratch in `run_dir`; its val top-1 error after every epoch."""
    from alexnet_dali.config.resolve import resolve_config
    from alexnet_dali.train.loop import train
    from alexnet_dali.train.runlog import read_metrics

    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = resolve_config(str(shards), base=values, base_name=f"recipe {name}", flags={
        "run_dir": str(run_dir), "epochs": epochs, "batch_size": batch_size, "seed": seed,
        "device": "cpu", "threads": threads, "keep_checkpoints": 1})
    started = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - started
    errors = [r["top1_err"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "val"]
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # 0.46 GB each; the curve stays
    return {"val_top1_err": errors, "seconds": seconds}


def format_table(results: dict[str, dict[str, Any]], classes: int,
                 linear: dict[str, float] | None) -> str:
    """Epoch by epoch, each recipe's val top-1 error; chance and the linear model under it."""
    names = list(results)
    epochs = max(len(r["val_top1_err"]) for r in results.values())
    lines = ["val top-1 error after each epoch (center crop)",
             "| epoch | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for e in range(epochs):
        cells = [f"{r['val_top1_err'][e]:.3f}" if e < len(r["val_top1_err"]) else "-"
                 for r in results.values()]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    lines.append("| wall | " + " | ".join(f"{r['seconds'] / 60:.1f} min"
                                          for r in results.values()) + " |")
    lines.append(f"chance: {1 - 1 / classes:.3f}")
    if linear is not None:
        lines.append(f"linear model on the raw pixels ({linear['side']}x{linear['side']}x3, L2 "
                     f"{linear['l2']:g}): val top-1 error {1 - linear['val_acc']:.3f} (train "
                     f"{1 - linear['train_acc']:.3f})")
    return "\n".join(lines)


def run_bench(workdir: str | Path, recipes: dict[str, dict[str, Any]], data: LearnData, *,
              epochs: int, batch_size: int, threads: int, linear: bool,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Prepare the data, measure the linear model, train every recipe; print the table."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    shards = prepare_data(workdir, data, log)
    baseline = None
    if linear:
        started = time.perf_counter()
        baseline = linear_baseline(shards, data.classes, seed=data.seed)
        log(f"linear model on the raw pixels: val accuracy {baseline['val_acc']:.3f} "
            f"(chance {1 / data.classes:.3f}; train {baseline['train_acc']:.3f}; "
            f"{time.perf_counter() - started:.0f} s)")
    results = {}
    for name, values in recipes.items():
        log(f"recipe {name}: training {epochs} epochs, batch {batch_size}")
        results[name] = train_recipe(values, name, shards, workdir / "runs" / name, epochs=epochs,
                                     batch_size=batch_size, threads=threads, seed=data.seed)
    log(format_table(results, data.classes, baseline))
    return {"data": asdict(data), "linear": baseline, "recipes": results,
            "chance_top1_err": 1 - 1 / data.classes, "log_classes": math.log(data.classes)}
