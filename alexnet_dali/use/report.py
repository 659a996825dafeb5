"""What `eval` prints and writes: the result table, the per-class table, eval.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alexnet_dali.tools.outdir import explain_os_errors, naming
from alexnet_dali.train.metrics import TOP5_MIN_CLASSES


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
