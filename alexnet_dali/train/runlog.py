"""Run logging: `RUN/metrics.jsonl` (one JSON object a line) and TensorBoard scalars when installed;
`read_metrics` is the file's one reader. Also the one-line notes a run prints about itself
(resumed from where, complete, devices, stalled at chance).

Line shapes (the figures read them):
  {"kind": "train", "epoch": 1, "step": 40, "loss": 2.1, "top1_err": 0.7, "lr": 0.01,
   "images_per_s": 850.0}
  {"kind": "val", "epoch": 1, "step": 40, "loss": 1.9, "top1_err": 0.61, "top5_err": 0.2}
`epoch` is 1-based; `step` is the global optimiser step. A train line's loss and top-1 error
are the means since the previous train line, on the augmented training crops with dropout on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from alexnet_dali.errors import DataError
from alexnet_dali.tools.outdir import naming

METRICS_NAME = "metrics.jsonl"
CHANCE_EPOCHS = 3  # after this many epochs at chance, say what usually helps
CHANCE_MARGIN = 0.05  # "at chance": val top-1 error at least 1 - 1/classes minus this


class RunLog:
    """Appends metric lines to RUN/metrics.jsonl and mirrors numbers to TensorBoard."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_NAME
        self.writer = None
        self.note = ""
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.note = (
                    "note: tensorboard is not installed, so no TensorBoard logs "
                    "(pip install tensorboard); metrics.jsonl is written anyway"
                )
            else:
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (rank 0 only; a no-op elsewhere)."""
        if not self.enabled:
            return
        with naming(self.path), self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            kind, step = record["kind"], record["step"]
            for key, value in record.items():
                if key not in ("kind", "epoch", "step") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def drop_after(self, step: int) -> None:
        """Remove lines with a step beyond `step` (a resumed run logs those steps again)."""
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if _step(line) <= step]
        if len(kept) != len(lines):
            self.path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        """Flush TensorBoard files."""
        if self.writer is not None:
            self.writer.close()


def _step(line: str) -> float:
    """A line's step; infinity for a blank or torn line (a full disk or a kill mid-write)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def resume_line(path: str, epoch: int, epochs: int, step_in_epoch: int, steps: int,
                global_step: int) -> str:
    """What a resumed run continues from (epoch 0-based, as in the checkpoint)."""
    return (f"resuming from {path}: epoch {epoch + 1} of {epochs}, {step_in_epoch} of {steps} "
            f"steps done, global step {global_step}")


def complete_line(path: str, done: int, epochs: int, global_step: int) -> str:
    """What `train --resume` says of a run that has already trained its `epochs` (`done`)."""
    return (f"{path}: the run is complete ({done} of {epochs} epochs, global step "
            f"{global_step}); nothing to do (to train longer: --resume --epochs N)")


def devices_line(devices: Sequence[Any]) -> str:
    """Where the towers of a --model-parallel run compute."""
    first, second = (str(d) for d in devices)
    line = f"model-parallel: tower 1 on {first}, tower 2 on {second}"
    if first == "cpu":
        line += " (the split network on the CPU, for testing: no speed-up over one device)"
    return line


def at_chance(top1_err: float, classes: int, samples: int) -> bool:
    """True if a val top-1 error is at chance: within CHANCE_MARGIN of 1 - 1/classes, or within
    two standard deviations of a guess's accuracy on `samples` val images, whichever is wider
    (70 images: 0.10)."""
    chance = 1 - 1 / classes
    margin = max(CHANCE_MARGIN, 2 * math.sqrt(chance * (1 - chance) / max(samples, 1)))
    return top1_err >= chance - margin


def chance_note(top1_err: float, classes: int, samples: int, epoch: int) -> str:
    """A one-line hint when, after CHANCE_EPOCHS epochs, the val top-1 error is still at chance
    (`at_chance`; the paper's recipe stalls on few classes and short runs), else ""."""
    chance = 1 - 1 / classes
    if epoch != CHANCE_EPOCHS or not at_chance(top1_err, classes, samples):
        return ""
    return (f"note: after {epoch} epochs the val top-1 error {top1_err:.3f} is at chance "
            f"({chance:.3f} for {classes} classes). The paper's recipe (biases of 1, lr 0.01, "
            "plateau schedule) stalls on few classes and short runs: add --config short-run "
            "(docs/TRAINING.md)")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file; a bad line is an error naming the file and line."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not a JSON line ({e}); fix or delete it") from None
        if not isinstance(record, dict) or "kind" not in record or "step" not in record:
            raise DataError(f"{path}:{number}: expected an object with 'kind' and 'step'; fix or "
                            "delete it")
        records.append(record)
    return records
