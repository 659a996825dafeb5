"""Top-k error and ten-crop averaging on hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet_dali.train.metrics import (TopKMeter, tencrop_probabilities, topk_correct,
                                  topk_errors)

# Four samples, six classes; the label's rank is written next to each row.
LOGITS = torch.tensor([
    [0.1, 0.9, 0.3, 0.2, 0.05, 0.0],  # label 1: rank 1 -> top-1 and top-5 correct
    [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],   # label 4: rank 5 -> top-5 correct only
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],   # label 0: rank 6 -> both wrong
    [1.0, 3.0, 2.0, 0.0, 0.5, 0.2],   # label 2: rank 2 -> top-5 correct only
])
LABELS = torch.tensor([1, 4, 0, 2])


def test_topk_errors_hand_checked() -> None:
    assert topk_correct(LOGITS, LABELS).tolist() == [1, 3]
    assert topk_errors(LOGITS, LABELS) == {"top1_err": 0.75, "top5_err": 0.25}


def test_probabilities_give_the_same_errors_as_logits() -> None:
    assert topk_errors(torch.softmax(LOGITS, 1), LABELS) == topk_errors(LOGITS, LABELS)


def test_valid_mask_drops_padding() -> None:
    valid = torch.tensor([True, True, False, False])
    assert topk_correct(LOGITS, LABELS, valid=valid).tolist() == [1, 2]


def test_k_is_clamped_to_the_class_count() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert topk_errors(logits, torch.tensor([0])) == {"top1_err": 1.0, "top5_err": 0.0}


def test_tencrop_averages_softmax_not_logits() -> None:
    # One confident view for class 1 and nine mild views for class 0: averaging logits picks
    # class 1 (mean logits 0.9 vs 3.0), averaging softmaxes picks class 0 (0.658 vs 0.342).
    views = torch.tensor([[0.0, 30.0]] + [[1.0, 0.0]] * 9).unsqueeze(0)  # 1×10×2
    probs = tencrop_probabilities(views)
    p0 = 9 * np.exp(1) / (np.exp(1) + 1) / 10
    np.testing.assert_allclose(probs.numpy(), [[p0, 1 - p0]], rtol=1e-6)
    assert probs.argmax(1).item() == 0 and views.mean(1).argmax(1).item() == 1


def test_tencrop_matches_numpy_softmax_mean() -> None:
    logits = torch.randn(3, 10, 7, generator=torch.Generator().manual_seed(0))
    x = logits.double().numpy()
    e = np.exp(x - x.max(-1, keepdims=True))
    expected = (e / e.sum(-1, keepdims=True)).mean(1)
    np.testing.assert_allclose(tencrop_probabilities(logits).numpy(), expected, rtol=1e-5)


def test_meter_accumulates_batches_and_tencrop_logits() -> None:
    meter = TopKMeter()
    meter.update(LOGITS[:2], LABELS[:2])
    meter.update(LOGITS[2:].unsqueeze(1).repeat(1, 10, 1), LABELS[2:])  # ten identical views
    assert meter.counts().tolist() == [1, 3, 4]
    result = meter.result()
    assert result["top1_err"] == 0.75 and result["top5_acc"] == 0.75 and result["samples"] == 4


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="N×C"):
        topk_correct(LOGITS, LABELS[:2])
    with pytest.raises(ValueError, match="views"):
        tencrop_probabilities(LOGITS)


def test_errors_are_counts_derived_and_rounded_for_json() -> None:
    """14 wrong of 70: 0.2 exactly in JSON (1 - 56/70 would be 0.19999999999999996)."""
    from alexnet_dali.train.metrics import round_significant

    meter = TopKMeter()
    meter.correct = torch.tensor([56, 70])
    meter.total = 70
    result = meter.result()
    assert (result["top1_err"], result["top1_acc"], result["top5_err"]) == (0.2, 0.8, 0.0)
    assert 1 - 56 / 70 != 0.2  # the float that used to reach eval.json
    assert round_significant(2 / 3) == 0.666667 and round_significant(1 / 3000) == 0.000333333


def test_per_class_counts_hand_checked() -> None:
    from alexnet_dali.train.metrics import PerClassMeter

    meter = PerClassMeter(num_classes=6)
    # LABELS 1, 4, 0, 2 (ranks 1, 5, 6, 2), a class-5 sample at rank 1, then padding (class 1)
    scores = torch.cat([LOGITS, LOGITS[2:3], LOGITS[0:1]])
    labels = torch.tensor([1, 4, 0, 2, 5, 1])
    meter.update(scores[:3], labels[:3])
    meter.update(scores[3:], labels[3:], valid=torch.tensor([True, True, False]))
    names = [f"c{i}" for i in range(6)]
    rows = meter.rows(names)
    assert [(r["class"], r["samples"], r["top1_acc"], r["top5_acc"]) for r in rows] == [
        ("c0", 1, 0.0, 0.0), ("c2", 1, 0.0, 1.0), ("c4", 1, 0.0, 1.0), ("c1", 1, 1.0, 1.0),
        ("c5", 1, 1.0, 1.0)]  # worst top-1 first, then by id; class 3 has no sample


def test_per_class_rows_are_rounded_like_the_totals_and_sorted_exactly() -> None:
    """1 of 3 and 2 of 3 correct: 0.333333 / 0.666667 in the rows (and so in eval.json), not
    0.3333333333333333; the order still comes from the exact fractions."""
    from alexnet_dali.train.metrics import PerClassMeter

    meter = PerClassMeter(num_classes=2, ks=(1,))
    meter.counts = torch.tensor([[2, 1], [3, 3]])  # correct@1 per class; samples per class
    rows = meter.rows(["a", "b"])
    assert [(r["class"], r["top1_acc"]) for r in rows] == [("b", 0.333333), ("a", 0.666667)]
