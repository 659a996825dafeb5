"""What `train` prints about its progress: a line per epoch and a summary at the end.

The epoch line gives the val and train numbers and the checkpoint just saved with its size
(full AlexNet checkpoints hold the weights and the momentum: ~0.46 GB each). Top-5 errors are
left out with 5 classes or fewer, where every label is in the top 5. The summary says where the
best epoch's checkpoint is (or that keep-last-K pruned it), how much disk the kept checkpoints
take, the wall time, and the commands to run next. Everything is read from values already on
the host and from RUN itself: no device work.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from alexnet_dali.model.checkpoint import CKPT_RE, checkpoint_dir, list_checkpoints
from alexnet_dali.train.metrics import TOP5_MIN_CLASSES
from alexnet_dali.train.runlog import METRICS_NAME, read_metrics


def size_text(size: int) -> str:
    """Bytes as `456 MB` or `1.37 GB` (powers of 1000, as `ls -lh --si` and disk makers)."""
    if size >= 10**9:
        return f"{size / 1e9:.2f} GB"
    if size >= 10**6:
        return f"{size / 1e6:.0f} MB"
    return f"{size / 1e3:.0f} kB"


def duration_text(seconds: float) -> str:
    """`45 s`, `7 min 13 s`, `2 h 05 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def errors_text(result: dict[str, Any], classes: int) -> str:
    """`loss 1.2345 top-1 err 0.3700` (+ ` top-5 err ...` with more than 5 classes)."""
    text = f"loss {result['loss']:.4f} top-1 err {result['top1_err']:.4f}"
    if classes >= TOP5_MIN_CLASSES and result.get("top5_err") is not None:
        text += f" top-5 err {result['top5_err']:.4f}"
    return text


def epoch_line(epoch: int, val: dict[str, Any], train: dict[str, float] | None, classes: int,
               new_lr: float | None, saved: Path | None) -> str:
    """`epoch 3: val loss ... top-1 err ...; train loss ... top-1 err ...; saved NAME (SIZE)`.

    `epoch` is 1-based; `train` the epoch's training loss and top-1 error (None when no step
    ran in this process, e.g. resumed right after the epoch's last step); `new_lr` the learning
    rate the schedule just dropped to, if it did."""
    parts = [f"epoch {epoch}: val {errors_text(val, classes)}"]
    if train is not None:
        parts.append(f"train {errors_text(train, 0)}")
    if new_lr is not None:
        parts.append(f"lr -> {new_lr:.3g}")
    if saved is not None:
        parts.append(f"saved {saved.name} ({size_text(saved.stat().st_size)})")
    return "; ".join(parts)


def best_epoch(run_dir: str | Path) -> dict[str, Any] | None:
    """The val record with the lowest top-1 error in RUN/metrics.jsonl (of equals the latest,
    whose checkpoint keep-last-K prunes last)."""
    path = Path(run_dir) / METRICS_NAME
    vals = [r for r in read_metrics(path) if r["kind"] == "val"] if path.is_file() else []
    return min(vals, key=lambda r: (r["top1_err"], -r["epoch"])) if vals else None


def checkpoint_of(run_dir: str | Path, epoch: int, step: int) -> Path | None:
    """The checkpoint saved at the end of `epoch` (1-based) at global `step`, if still there."""
    for path in list_checkpoints(run_dir):
        match = CKPT_RE.match(path.name)
        if (int(match.group(1)), int(match.group(2))) == (epoch, step):
            return path
    return None


def summary_lines(cfg: Any, first_epoch: int, seconds: float) -> list[str]:
    """The end-of-run summary of a finished run; `first_epoch` (0-based) is where this process
    started (0, or the epoch a resume continued)."""
    run_dir, data = cfg.run_dir, cfg.data
    ran = (f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)}" if first_epoch == 0 else
           f"epochs {first_epoch + 1}-{cfg.epochs} of {cfg.epochs} (resumed)")
    lines = [f"done: {ran} in {duration_text(seconds)}"]
    best = best_epoch(run_dir)
    best_path = checkpoint_of(run_dir, best["epoch"], best["step"]) if best else None
    if best is not None:
        where = (str(best_path) if best_path else
                 f"its checkpoint is deleted: the run keeps the newest {cfg.keep_checkpoints}; "
                 "--keep-checkpoints N")
        lines.append(f"best: val top-1 err {best['top1_err']:.4f} after epoch {best['epoch']} "
                     f"({where})")
    kept = list_checkpoints(run_dir)
    if kept:
        total = sum(p.stat().st_size for p in kept)
        each = f"{size_text(kept[-1].stat().st_size)} each; " if len(kept) > 1 else ""
        lines.append(f"checkpoints: {len(kept)} in {checkpoint_dir(run_dir)}, {size_text(total)} "
                     f"({each}--keep-checkpoints N keeps the newest N)")
    newest = kept[-1] if kept else None
    target = best_path if best_path is not None and best_path != newest else Path(run_dir)
    q = shlex.quote
    lines.append(f"next: alexnet-dali eval {q(data)} --checkpoint {q(str(target))} --tencrop")
    lines.append(f"next: alexnet-dali figures {q(str(run_dir))}")
    return lines
