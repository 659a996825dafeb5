"""`bench init`: how each init sends real images through AlexNet, and its first SGD steps.

For every init asked (model.init: the authors' code, the paper's text, Caffe's, He's), on one
train batch of DATA as the train pipeline gives it (mean-subtracted 0-255 pixels by default):

- per layer (conv1 ... fc8, before the ReLU): the mean over all units and images, the std, the
  *signal* (each unit's std across the batch's images, averaged over units: how much the layer's
  output depends on the image) and the share of *dead* units (ReLU output 0 for every image);
- fc7's output split into its image-independent part (the batch mean vector h̄, |h̄|²) and what
  varies with the image; the curvature of the loss along "raise class k's logit for every image"
  (|h̄|²·(1/C)(1 - 1/C) at a uniform softmax) and the largest lr that SGD with momentum m keeps
  stable along it, 2(1 + m)/curvature;
- then `steps` training steps at the config's lr: the loss, the train accuracy and each layer's
  relative weight update (lr·|∇W|/|W|), every step on the same batches for every init; and the
  dead units again after them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alexnet_dali.config.schema import TrainConfig

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
REPORT_STEPS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200)
MAX_BATCHES = 16  # kept in memory (~19 MB each at batch 32); longer runs cycle through them


@dataclass(frozen=True)
class LayerScale:
    """One layer's pre-activation output on a batch."""

    mean: float
    std: float
    signal: float  # per-unit std across the images, averaged over units
    dead: float  # share of units whose ReLU output is 0 for every image of the batch


def layer_scales(net: nn.Module, images: torch.Tensor) -> dict[str, LayerScale]:
    """Forward `images` (eval mode: no dropout) and measure each of LAYERS' outputs."""
    seen: dict[str, LayerScale] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            o = out.detach().float()
            units = o.transpose(0, 1).reshape(o.shape[1], o.shape[0], -1)  # unit, image, place
            seen[name] = LayerScale(o.mean().item(), o.std().item(),
                                    units.std(dim=1).mean().item(),
                                    (units.amax(dim=(1, 2)) <= 0).float().mean().item())
        return record

    handles = [getattr(net, n).register_forward_hook(hook(n)) for n in LAYERS]
    try:
        with torch.no_grad():
            net.eval()(images)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def class_shift(features: torch.Tensor, classes: int, momentum: float) -> dict[str, float]:
    """fc7's image-independent energy |h̄|², the per-image rest, the class-shift curvature at a
    uniform softmax and the largest lr stable along it (SGD with `momentum`)."""
    mean = features.mean(dim=0)
    energy = float((mean ** 2).sum())
    varying = float(((features - mean) ** 2).sum(dim=1).mean())
    curvature = energy * (1 / classes) * (1 - 1 / classes)
    return {"mean_energy": energy, "varying_energy": varying, "curvature": curvature,
            "stable_lr": 2 * (1 + momentum) / curvature if curvature > 0 else math.inf}


def first_steps(net: nn.Module, cfg: TrainConfig, batches: list, steps: int) -> list[dict]:
    """`steps` SGD steps (the config's optimiser, lr and step warm-up) over `batches` in turn;
    per step the loss, the accuracy and each layer's relative update lr·|∇W|/|W| (before the
    step)."""
    from alexnet_dali.train.optim import build_optimizer
    from alexnet_dali.train.schedule import LRSchedule

    optimizer = build_optimizer(net.parameters(), cfg.optim)
    schedule = LRSchedule(optimizer, cfg.optim, cfg.batch_size)
    net.train()
    rows = []
    for step in range(steps):
        images, labels = batches[step % len(batches)]
        schedule.at_step(step)
        logits = net(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        update = {name: (schedule.lr * getattr(net, name).weight.grad.norm()
                         / getattr(net, name).weight.norm()).item() for name in LAYERS}
        optimizer.step()
        rows.append({"loss": loss.item(), "acc": (logits.argmax(1) == labels).float().mean().item(),
                     "update": update})
    return rows


def study(cfg: TrainConfig, inits: tuple[str, ...], steps: int, batches: list) -> dict[str, Any]:
    """Every init's scales, class-shift numbers and first steps on the same batches."""
    from alexnet_dali.model.alexnet import build_model

    results = {}
    for init in inits:
        run_cfg = replace(cfg, model=replace(cfg.model, init=init))
        torch.manual_seed(cfg.seed)
        net = build_model(run_cfg.model)
        images, _ = batches[0]
        scales = layer_scales(net, images)
        with torch.no_grad():
            features = net.eval().features(images)
            loss = F.cross_entropy(net(images), batches[0][1]).item()
        torch.manual_seed(cfg.seed)  # the same dropout masks for every init
        started = time.perf_counter()
        rows = first_steps(net, run_cfg, batches, steps)
        after = layer_scales(net, images)
        results[init] = {"scales": scales, "init_loss": loss, "dead_after": {
            name: after[name].dead for name in LAYERS[:-1]},
                         "shift": class_shift(features, cfg.model.num_classes, cfg.optim.momentum),
                         "steps": rows, "seconds": time.perf_counter() - started}
    return results


def format_report(results: dict[str, Any], cfg: TrainConfig, input_std: float) -> str:
    """The tables `bench init` prints."""
    from alexnet_dali.train.schedule import peak_lr

    classes, lr = cfg.model.num_classes, peak_lr(cfg.optim, cfg.batch_size)
    lines = [f"bench init: {classes} classes, batch {cfg.batch_size}, lr {lr:g}, "
             f"momentum {cfg.optim.momentum:g}, inputs: mean '{cfg.augment.mean}' subtracted, std "
             f"{input_std:.1f}; ln C = {math.log(classes):.3f}",
             "", "per layer, before the ReLU, at init (eval mode; one train batch): "
             "mean / std / signal (std across images) / dead units",
             "| layer | " + " | ".join(results) + " |",
             "|---|" + "---|" * len(results)]
    for name in LAYERS:
        cells = []
        for result in results.values():
            s = result["scales"][name]
            dead = f" / {s.dead:.0%}" if name != "fc8" else ""
            cells.append(f"{s.mean:.3g} / {s.std:.3g} / {s.signal:.3g}{dead}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "fc7 output (the logits' input) and the class-shift direction at init:",
              "| init | loss | signal/mean (fc7) | abs(mean h7)^2 | varying part | curvature "
              "| largest stable lr |", "|---|---|---|---|---|---|---|"]
    for init, result in results.items():
        shift, fc7 = result["shift"], result["scales"]["fc7"]
        lines.append(f"| {init} | {result['init_loss']:.3f} | "
                     f"{fc7.signal / max(abs(fc7.mean), 1e-12):.3g} | {shift['mean_energy']:.4g} "
                     f"| {shift['varying_energy']:.4g} | {shift['curvature']:.4g} | "
                     f"{shift['stable_lr']:.3g} |")
    steps = len(next(iter(results.values()))["steps"])
    shown = [s for s in REPORT_STEPS if s <= steps]
    warm = f" after a {cfg.optim.warmup_steps}-step warm-up" if cfg.optim.warmup_steps else ""
    lines += ["", f"the first {steps} steps at lr {lr:g}{warm}: train loss (accuracy) at step",
              "| init | " + " | ".join(str(s) for s in shown) + " | max loss |",
              "|---|" + "---|" * (len(shown) + 1)]
    for init, result in results.items():
        rows = result["steps"]
        cells = [f"{rows[s - 1]['loss']:.3g} ({rows[s - 1]['acc']:.2f})" for s in shown]
        lines.append(f"| {init} | " + " | ".join(cells)
                     + f" | {max(r['loss'] for r in rows):.3g} |")
    lines += ["", f"dead units (ReLU output 0 for every image of the batch) at init -> after "
              f"{steps} steps", "| init | " + " | ".join(LAYERS[:-1]) + " |",
              "|---|" + "---|" * (len(LAYERS) - 1)]
    for init, result in results.items():
        cells = [f"{result['scales'][n].dead:.0%} -> {result['dead_after'][n]:.0%}"
                 for n in LAYERS[:-1]]
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    picked = shown[:3] + shown[-1:] if len(shown) > 3 else shown
    lines += ["", "relative weight update lr*|grad W|/|W| per layer, at steps "
              + ", ".join(str(s) for s in picked),
              "| init | " + " | ".join(LAYERS) + " |", "|---|" + "---|" * len(LAYERS)]
    for init, result in results.items():
        rows = result["steps"]
        cells = ["/".join(f"{rows[s - 1]['update'][n]:.0e}" for s in picked)
                 for n in LAYERS]
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_bench(data: str, *, inits: tuple[str, ...], steps: int, batch_size: int, lr: float,
              threads: int, seed: int, config_file: tuple[str, ...] = (),
              sets: tuple[str, ...] = ()) -> dict[str, Any]:
    """Measure and print; the numbers as a dict."""
    from alexnet_dali.config.resolve import resolve_config
    from alexnet_dali.loader.data import open_shards
    from alexnet_dali.train.builders import build_loaders, resolve_for_data
    from alexnet_dali.train.distributed import DistInfo, pick_device

    if threads:
        torch.set_num_threads(threads)
    cfg = resolve_config(data, config_file=config_file, sets=sets, flags={
        "batch_size": batch_size, "lr": lr, "seed": seed, "device": "cpu"})
    shards = open_shards(data)
    cfg = resolve_for_data(cfg, shards)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=pick_device("cpu"))
    train_loader, _ = build_loaders(cfg, shards, info, torch.device("cpu"), None)
    batches = []
    for images, labels in train_loader:  # the steps cycle through these batches
        batches.append((images.clone(), labels.clone()))
        if len(batches) >= min(steps, MAX_BATCHES):
            break
    results = study(cfg, inits, steps, batches)
    print(format_report(results, cfg, float(batches[0][0].std())))
    return results
