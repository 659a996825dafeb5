"""Top-k error and ten-crop averaging (the paper's section 6 test protocol).

Top-k is rank based, so it is the same computed from logits or from probabilities. A sample is
correct at k when its label is among the k highest scores (`torch.topk`; exact ties are broken
by `topk`'s order). With fewer than k classes, k is clamped to the class count (every sample is
then correct at k), so a 4-class demo reports a top-5 error of 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TOPK = (1, 5)
TOP5_MIN_CLASSES = 6  # with 5 classes or fewer every label is in the top 5: not printed


def tencrop_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Ten-crop logits N×V×C (any float dtype) → mean of the V softmaxes, N×C float32."""
    if logits.dim() != 3:
        raise ValueError(f"tencrop_probabilities: expected N×views×classes logits, got "
                         f"shape {tuple(logits.shape)}")
    return torch.softmax(logits.float(), dim=-1).mean(dim=1)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = TOPK,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Scores N×C (logits or probabilities), labels int N → correct counts int64 (len(ks),).

    `valid` (bool N) drops padding samples so that each sample is counted once across ranks.
    """
    if scores.dim() != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"topk_correct: expected scores N×C and labels N, got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    if valid is not None:
        scores, labels = scores[valid], labels[valid]
    return topk_hits(scores, labels, ks).sum(dim=0).to(torch.int64)


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = TOPK) -> torch.Tensor:
    """Scores N×C, labels N → bool N×len(ks): is the label among the k highest scores."""
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices  # N×kmax, best first
    hits = top.eq(labels.to(top.device).view(-1, 1))  # N×kmax, at most one True per row
    return torch.stack([hits[:, : min(k, kmax)].any(dim=1) for k in ks], dim=1)


def topk_errors(scores: torch.Tensor, labels: torch.Tensor,
                ks: Sequence[int] = TOPK) -> dict[str, float]:
    """Scores N×C, labels N → {"top1_err": …, "top5_err": …} as fractions in [0, 1]."""
    correct = topk_correct(scores, labels, ks)
    return errors_from_counts(correct, labels.numel(), ks)


def errors_from_counts(correct: torch.Tensor, total: int,
                       ks: Sequence[int] = TOPK) -> dict[str, float]:
    """Correct counts (len(ks),) over `total` samples → {"top{k}_err": fraction} per k."""
    if total <= 0:
        raise ValueError("errors_from_counts: no samples were evaluated")
    return {f"top{k}_err": round_significant((total - c) / total)
            for k, c in zip(ks, correct.tolist())}


def round_significant(value: float, digits: int = 6) -> float:
    """`value` rounded to `digits` significant digits: 14 / 70 gives 0.2 in JSON, where
    1 - 56 / 70 gives 0.19999999999999996."""
    return float(f"{value:.{digits}g}")


class TopKMeter:
    """Accumulates top-k correct counts over batches; `counts()` is what ranks all-reduce."""

    def __init__(self, ks: Sequence[int] = TOPK) -> None:
        self.ks = tuple(ks)
        self.correct = torch.zeros(len(self.ks), dtype=torch.int64)
        self.total = 0

    def update(self, scores: torch.Tensor, labels: torch.Tensor,
               valid: torch.Tensor | None = None) -> None:
        """Add a batch: scores N×C (or N×V×C ten-crop logits, averaged as softmaxes)."""
        if scores.dim() == 3:
            scores = tencrop_probabilities(scores)
        self.correct += topk_correct(scores, labels, self.ks, valid).cpu()
        self.total += int(valid.sum()) if valid is not None else labels.numel()

    def counts(self) -> torch.Tensor:
        """[correct@k…, total] as int64, for `torch.distributed.all_reduce`."""
        return torch.cat([self.correct, torch.tensor([self.total])])

    def result(self, counts: torch.Tensor | None = None) -> dict[str, float]:
        """Errors and accuracies from own (or all-reduced) counts: top1_err, top1_acc, …."""
        counts = self.counts() if counts is None else counts.cpu()
        total = int(counts[-1])
        errors = errors_from_counts(counts[:-1], total, self.ks)
        out: dict[str, float] = {}
        for k, correct in zip(self.ks, counts[:-1].tolist()):
            out[f"top{k}_err"] = errors[f"top{k}_err"]
            out[f"top{k}_acc"] = round_significant(correct / total)
        out["samples"] = total
        return out


class PerClassMeter:
    """Per class: correct@k counts and samples, int64 (len(ks)+1)×C; all-reduce `counts`."""

    def __init__(self, num_classes: int, ks: Sequence[int] = TOPK) -> None:
        self.ks = tuple(ks)
        self.counts = torch.zeros(len(self.ks) + 1, num_classes, dtype=torch.int64)

    def update(self, scores: torch.Tensor, labels: torch.Tensor,
               valid: torch.Tensor | None = None) -> None:
        """Add a batch of scores N×C (logits or probabilities) and labels N."""
        if valid is not None:
            scores, labels = scores[valid], labels[valid]
        labels = labels.cpu().long()
        hits = topk_hits(scores, labels, self.ks).cpu()
        classes = self.counts.shape[1]
        for i in range(len(self.ks)):
            self.counts[i] += torch.bincount(labels[hits[:, i]], minlength=classes)
        self.counts[-1] += torch.bincount(labels, minlength=classes)

    def rows(self, names: Sequence[str], counts: torch.Tensor | None = None) -> list[dict]:
        """One row per class that has samples, worst top-1 accuracy first (then by id):
        {"class_id", "class", "samples", "top1_acc", "top5_acc"}."""
        counts = self.counts if counts is None else counts.cpu()
        present = [c for c in range(counts.shape[1]) if int(counts[-1, c])]
        # worst first by the exact fraction; the rows hold it rounded like every other result
        present.sort(key=lambda c: (int(counts[0, c]) / int(counts[-1, c]), c))
        rows = []
        for c in present:
            total = int(counts[-1, c])
            row = {"class_id": c, "class": names[c], "samples": total}
            row.update({f"top{k}_acc": round_significant(int(counts[i, c]) / total)
                        for i, k in enumerate(self.ks)})
            rows.append(row)
        return rows
