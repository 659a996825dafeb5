"""Validation and `eval`: top-1/top-5 error over a whole split, center or ten-crop, any rank count.

Each rank scores its share; padded samples (valid=False) are dropped; the counts are summed over
ranks, so every sample counts exactly once.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from alexnet_dali import distributed, metrics
from alexnet_dali.precision import autocast
from alexnet_dali.tools.outdir import explain_os_errors, naming


def probabilities(model: torch.nn.Module, images: torch.Tensor, *, precision: str = "fp32",
                  tencrop: bool = False) -> torch.Tensor:
    """Images N×3×H×W (N×10×3×H×W with tencrop) → softmax N×C float32 on the CPU; ten-crop:
    the mean of the ten softmaxes."""
    with autocast(images.device, precision):
        logits = model(images.flatten(0, 1) if tencrop else images)
    logits = logits.float().cpu()
    if tencrop:
        return metrics.tencrop_probabilities(logits.view(images.shape[0], -1, logits.shape[-1]))
    return F.softmax(logits, dim=-1)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: Iterable, *, device: torch.device, precision: str = "fp32",
    tencrop: bool = False, input_device: torch.device | None = None, progress: Any = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Top-1/top-5 error and accuracy and mean loss over `loader` (N x [10 x] 3 x H x W batches).

    With `class_names` (one per class) also "per_class": PerClassMeter rows, worst first.
    "skipped": damaged samples the loader's gate held back (not scored), over all ranks;
    "damaged_stop": whether any rank's gate says the damage must stop the command.
    """
    was_training = model.training
    model.eval()
    meter = metrics.TopKMeter((1, 5))
    per_class = metrics.PerClassMeter(len(class_names), (1, 5)) if class_names else None
    loss_sum = torch.zeros(1, dtype=torch.float64)
    input_device = input_device or device
    for images, labels, valid in loader:
        probs = probabilities(model, images.to(input_device, non_blocking=True),
                              precision=precision, tencrop=tencrop)
        labels, valid = labels.cpu().long(), valid.cpu().bool()
        meter.update(probs, labels, valid)  # softmax keeps the ranking: same top-k as logits
        if per_class is not None:
            per_class.update(probs, labels, valid)
        loss_sum += F.nll_loss(probs[valid].clamp_min(1e-12).log(), labels[valid],
                               reduction="sum").item()
        if progress is not None:
            progress.update(1)
    model.train(was_training)
    gate = getattr(loader, "gate", None)
    damaged = [float(gate.take_masked()), float(gate.must_stop)] if gate else [0.0, 0.0]
    own = [meter.counts().double(), loss_sum, torch.tensor(damaged, dtype=torch.float64)]
    if per_class is not None:
        own.append(per_class.counts.flatten().double())
    counts = distributed.all_reduce(torch.cat(own).to(device)).cpu()
    top = len(meter.counts())
    result: dict[str, Any] = meter.result(counts[:top].long())
    result["loss"] = metrics.round_significant(counts[top].item() / max(result["samples"], 1))
    result["skipped"], result["damaged_stop"] = int(counts[top + 1]), bool(counts[top + 2] > 0)
    if per_class is not None:
        per_class_counts = counts[top + 3:].long().view_as(per_class.counts)
        result["per_class"] = per_class.rows(class_names, per_class_counts)
    return result


TOP5_MIN_CLASSES = 6  # with 5 classes or fewer every label is in the top 5: not printed


def format_table(result: dict[str, Any], classes: int = TOP5_MIN_CLASSES) -> str:
    """A small fixed-width table of an eval result (top-5 columns with more than 5 classes)."""
    keys = ["top1_err"] + ["top5_err"] * (classes >= TOP5_MIN_CLASSES) + ["top1_acc"] + [
        "top5_acc"] * (classes >= TOP5_MIN_CLASSES)
    head = "".join(f"{k.replace('top', 'top-').replace('_', ' '):>11}" for k in keys)
    row = "".join(f"{result[k]:>11.4f}" for k in keys)
    return "\n".join([f"{'views':<8}{'samples':>9}{head}",
                      f"{result['views']:<8}{result['samples']:>9}{row}"])


def format_per_class(rows: list[dict[str, Any]], classes: int = TOP5_MIN_CLASSES) -> str:
    """Per-class table: id, samples, top-1 (and top-5) accuracy, then the whole class name
    (last, so that long ImageNet words need no cutting), worst first."""
    top5 = classes >= TOP5_MIN_CLASSES
    lines = [f"{'id':>6}{'samples':>9}{'top-1 acc':>11}" + f"{'top-5 acc':>11}" * top5
             + "  class"]
    lines += [f"{r['class_id']:>6}{r['samples']:>9}{r['top1_acc']:>11.4f}"
              + (f"{r['top5_acc']:>11.4f}" if top5 else "") + f"  {r['class']}" for r in rows]
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    """Write the eval result as pretty JSON (a full disk or the like: one error line)."""
    with explain_os_errors("run eval again (the table above is the result)", path), \
            naming(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")


def evaluate_checkpoint(
    data: str, checkpoint: str, *, tencrop: bool = False, json_path: str | None = None,
    split: str = "val", batch_size: int = 64, device: str = "auto", workers: int | None = None,
    per_class: bool = False, skip_bad_samples: bool = False,
) -> dict[str, Any]:
    """`eval`: rebuild the model from the checkpoint's config, score `split` of DATA, report;
    `per_class` adds accuracy and samples per class (by name), worst first. A damaged sample
    (loader_integrity.py) is an error, or with `skip_bad_samples` left out and counted."""
    from alexnet_dali.builders import image_size_of, precision_of, resolve_for_data
    from alexnet_dali.checkpoint import (
        check_image_size,
        check_same_classes,
        load_checkpoint,
        model_from_checkpoint,
    )
    from alexnet_dali.errors import ConfigError
    from alexnet_dali.inference import class_names

    info = distributed.setup(device)
    try:
        state = load_checkpoint(checkpoint)
        check_same_classes(state, str(data))
        model, cfg = model_from_checkpoint(state)
        classes = resolve_for_data(dataclasses.replace(cfg, data=str(data))).model.num_classes
        if classes != cfg.model.num_classes:
            raise ConfigError(f"{data}: {classes} classes, but {state['path']} was trained on "
                              f"{cfg.model.num_classes}; evaluate it on data with its classes")
        check_image_size(state, image_size_of(str(data)), f"{data}/manifest.json")
        model.to(info.device)
        precision = precision_of(cfg, info.device)
        cfg = dataclasses.replace(cfg, loader=dataclasses.replace(
            cfg.loader, shard_check="skip" if skip_bad_samples else "stop"))
        loader = _eval_loader(data, cfg, info, split, batch_size, workers, tencrop)
        bar = tqdm(total=len(loader), desc=f"eval {split}" + (" ten-crop" if tencrop else ""),
                   unit="batch", disable=not info.is_main, leave=False)
        names = class_names(state, cfg, data) if per_class else None
        result = evaluate(model, loader, device=info.device, precision=precision, tencrop=tencrop,
                          progress=bar, class_names=names)
        bar.close()
        _report_damage(result, getattr(loader, "gate", None), data, split, info.is_main)
        result.update(views=10 if tencrop else 1, split=split, data=str(data),
                      checkpoint=state["path"], epoch=state["epoch"],
                      global_step=state["global_step"], world_size=info.world_size)
        if info.is_main:
            crop = "ten-crop" if tencrop else "center crop"
            print(f"scored {state['path']} (epoch {state['epoch']}, global step "
                  f"{state['global_step']}) on {split} of {data}, {crop}:")
            print(format_table(result, cfg.model.num_classes))
            if per_class:
                print(format_per_class(result["per_class"], cfg.model.num_classes))
            if json_path:
                write_json(result, json_path)
        return result
    finally:
        distributed.cleanup()


def _report_damage(result: dict[str, Any], gate: Any, data: str, split: str,
                   is_main: bool) -> None:
    """Damaged samples met: an error (every rank), or a line saying how many were left out."""
    from alexnet_dali.health import stop_error
    from alexnet_dali.loader_integrity import unchecked_note

    note = unchecked_note(gate, data)
    if note and is_main:
        print(note)
    if result.pop("damaged_stop"):
        raise stop_error(gate.problems() if gate else [], data, "eval stops without a result "
                         "(pass --skip-bad-samples to score the split without such samples)")
    if result["skipped"] and is_main:
        print(f"left out {result['skipped']} damaged samples of {split} (not scored; "
              f"--skip-bad-samples); `alexnet-dali verify --decode {data}` lists them")


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
