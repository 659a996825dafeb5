"""Validation and `eval`: top-1/top-5 error over a whole split, center or ten-crop, any rank count.

Each rank scores its share; padded samples (valid=False) are dropped; the counts are summed over
ranks, so every sample counts exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from alexnet_dali import distributed, metrics


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when `precision` is bf16, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: Iterable, *, device: torch.device, precision: str = "fp32",
    tencrop: bool = False, input_device: torch.device | None = None, progress: Any = None,
) -> dict[str, float]:
    """Top-1/top-5 error and accuracy and mean loss over `loader` (N x [10 x] 3 x H x W batches)."""
    was_training = model.training
    model.eval()
    meter = metrics.TopKMeter((1, 5))
    loss_sum = torch.zeros(1, dtype=torch.float64)
    input_device = input_device or device
    for images, labels, valid in loader:
        images = images.to(input_device, non_blocking=True)
        views = images.shape[1] if tencrop else 1
        with autocast(input_device, precision):
            logits = model(images.flatten(0, 1) if tencrop else images)
        logits = logits.float().cpu()
        labels, valid = labels.cpu().long(), valid.cpu().bool()
        if tencrop:
            logits = logits.view(-1, views, logits.shape[-1])
            probs = metrics.tencrop_probabilities(logits)
        else:
            probs = F.softmax(logits, dim=-1)
        meter.update(probs, labels, valid)  # softmax keeps the ranking: same top-k as logits
        loss_sum += F.nll_loss(probs[valid].clamp_min(1e-12).log(), labels[valid],
                               reduction="sum").item()
        if progress is not None:
            progress.update(1)
    model.train(was_training)
    counts = torch.cat([meter.counts().double(), loss_sum])
    counts = distributed.all_reduce(counts.to(device)).cpu()
    result = meter.result(counts[:-1].long())
    result["loss"] = counts[-1].item() / max(result["samples"], 1)
    return result


def format_table(result: dict[str, Any]) -> str:
    """A small fixed-width table of an eval result."""
    lines = [
        f"{'views':<8}{'samples':>9}{'top-1 err':>11}{'top-5 err':>11}{'top-1 acc':>11}"
        f"{'top-5 acc':>11}",
        f"{result['views']:<8}{result['samples']:>9}{result['top1_err']:>11.4f}"
        f"{result['top5_err']:>11.4f}{result['top1_acc']:>11.4f}{result['top5_acc']:>11.4f}",
    ]
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    """Write the eval result as pretty JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


def evaluate_checkpoint(
    data: str, checkpoint: str, *, tencrop: bool = False, json_path: str | None = None,
    split: str = "val", batch_size: int = 64, device: str = "auto", workers: int | None = None,
) -> dict[str, Any]:
    """`eval`: rebuild the model from the checkpoint's config, score `split` of DATA, report."""
    from alexnet_dali.builders import precision_of, resolve_for_data
    from alexnet_dali.checkpoint import check_same_classes, load_checkpoint, model_from_checkpoint
    from alexnet_dali.errors import ConfigError

    info = distributed.setup(device)
    try:
        state = load_checkpoint(checkpoint)
        check_same_classes(state.get("classes"), str(data), state["path"])
        model, cfg = model_from_checkpoint(state)
        classes = resolve_for_data(dataclasses.replace(cfg, data=str(data))).model.num_classes
        if classes != cfg.model.num_classes:
            raise ConfigError(f"{data}: {classes} classes, but {state['path']} was trained on "
                              f"{cfg.model.num_classes}; evaluate it on data with its classes")
        model.to(info.device)
        precision = precision_of(cfg, info.device)
        loader = _eval_loader(data, cfg, info, split, batch_size, workers, tencrop)
        bar = tqdm(total=len(loader), desc=f"eval {split}" + (" ten-crop" if tencrop else ""),
                   unit="batch", disable=not info.is_main, leave=False)
        result = evaluate(model, loader, device=info.device, precision=precision, tencrop=tencrop,
                          progress=bar)
        bar.close()
        result.update(views=10 if tencrop else 1, split=split, data=str(data),
                      checkpoint=state["path"], epoch=state["epoch"],
                      global_step=state["global_step"], world_size=info.world_size)
        if info.is_main:
            print(format_table(result))
            if json_path:
                write_json(result, json_path)
        return result
    finally:
        distributed.cleanup()


def _eval_loader(data: str, cfg: Any, info: Any, split: str, batch_size: int,
                 workers: int | None, tencrop: bool) -> Iterable:
    """The DALI eval loader for this rank (or the synthetic one for data `synthetic`)."""
    if data == "synthetic":
        from alexnet_dali.synthetic import SyntheticEvalLoader

        return SyntheticEvalLoader(samples=2 * cfg.batch_size, batch_size=batch_size,
                                   num_classes=cfg.model.num_classes, rank=info.rank,
                                   world_size=info.world_size, device=info.device,
                                   tencrop=tencrop)
    from alexnet_dali.loader import build_eval_loader

    loader_cfg = dataclasses.replace(cfg.loader, layout="NCHW",
                                     num_threads=workers or cfg.loader.num_threads)
    return build_eval_loader(data, split=split, loader=loader_cfg, augment=cfg.augment,
                             batch_size=batch_size, rank=info.rank,
                             world_size=info.world_size, device=info.device, tencrop=tencrop)
