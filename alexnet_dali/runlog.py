"""Run logging: `RUN/metrics.jsonl` (one JSON object a line) and TensorBoard scalars when installed;
`read_metrics` is the file's one reader.

Line shapes (the figures read them):
  {"kind": "train", "epoch": 1, "step": 40, "loss": 2.1, "lr": 0.01, "images_per_s": 850.0}
  {"kind": "val", "epoch": 1, "step": 40, "loss": 1.9, "top1_err": 0.61, "top5_err": 0.2}
`epoch` is 1-based; `step` is the global optimiser step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alexnet_dali.errors import DataError

METRICS_NAME = "metrics.jsonl"


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
        with self.path.open("a") as f:
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
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            self.path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        """Flush TensorBoard files."""
        if self.writer is not None:
            self.writer.close()


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
