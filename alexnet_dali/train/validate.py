"""Validation: top-1/top-5 error and loss over a whole split, center or ten-crop, any rank count
(the loop's each epoch, `eval`'s, the doctor's).

Each rank scores its share; padded samples (valid=False) are dropped; the counts are summed over
ranks, so every sample counts exactly once.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from alexnet_dali.train import distributed, metrics
from alexnet_dali.train.precision import autocast


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
