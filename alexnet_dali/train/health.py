"""Whether a run is healthy: a non-finite loss or weight stops it, and a run that does not learn
says so early (docs/TRAINING.md, "When a run diverges" and "A run that does not learn").

Non-finite: at every sync point each rank computes one flag per parameter on its device
(`weight_flags`: a NaN or an infinity anywhere in it). The flags travel in the sync point's one
all-reduce with the loss (`cadence.LossWindow.agree`), so no step gains a host sync and every rank
sees the same sums and stops at the same sync point (`Health.check`: `TrainingDiverged`, exit
status 3). Checkpoints are written only at sync points, after this check, so every one on disk
holds finite weights (`checkpoint.save_checkpoint` refuses others as well). A non-finite val loss
stops the run the same way, before the epoch's checkpoint.

Not learning: a uniform guess over C classes scores a train loss of ln C. If the train loss is
not below it at the first check point of a new run (the LOSS_CHECK_SYNCS-th sync point or the
first epoch's end, whichever comes first), one note names the likely causes; so does the first
lr drop of the plateau rule while the val error is still at chance.

Damaged data (`DamageTally`): the loaders' gates (loader/integrity.py) report at the same sync
points, in the same all-reduce, so that every rank stops together or counts what it left out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from alexnet_dali.train import distributed
from alexnet_dali.train.cadence import Agreement
from alexnet_dali.model.checkpoint import latest_checkpoint
from alexnet_dali.errors import CorruptSampleError, TrainingDiverged
from alexnet_dali.loader.integrity import SampleGate, unchecked_note
from alexnet_dali.train.runlog import at_chance

LOSS_CHECK_SYNCS = 50  # sync points (500 steps at log_every 10) before the train-loss check
CAUSES = ("likely causes: an lr too high (a first loss far above ln C: it overshoots; with few "
          "classes the paper's biases of 1 make its lr 0.01 too high: --config short-run) or too "
          "low, wrong labels or too little data (docs/TRAINING.md, \"A run that does not "
          "learn\")")


def weight_flags(params: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """1.0 for each parameter holding a NaN or an infinity, else 0.0: float32 on `device`.

    Device work only (no host sync); the model-parallel towers' flags are copied to `device`.
    """
    return torch.stack([(~torch.isfinite(p).all()).to(device) for p in params]).float()


class Health:
    """A run's checks at each sync point (finite loss and weights; the train loss vs ln C) and
    at each epoch's end (finite val loss; the first lr drop at chance)."""

    def __init__(self, net: torch.nn.Module, num_classes: int, run_dir: str | Path,
                 resumed: bool) -> None:
        self.names, self.params = zip(*net.named_parameters())
        self.num_classes, self.run_dir = num_classes, Path(run_dir)
        self.chance_loss = math.log(num_classes)
        self.syncs = 0
        self.loss_checked = resumed  # the check is about a new run's first steps

    def device_values(self, device: torch.device) -> torch.Tensor:
        """This rank's weight flags, for `LossWindow.agree`."""
        return weight_flags(self.params, device)

    def check(self, agreed: Agreement, where: str, lr: float) -> None:
        """TrainingDiverged if the agreed loss or any weight is non-finite; `where` says the
        epoch and step ("epoch 1, step 4 of 8 (global step 4)")."""
        bad = [name for name, flag in zip(self.names, agreed.device_values) if flag > 0]
        if math.isfinite(agreed.loss) and not bad:
            return
        what = []
        if not math.isfinite(agreed.loss):
            what.append(f"the train loss is {agreed.loss} (mean since the previous sync point)")
        if bad:
            what.append(f"{len(bad)} of {len(self.names)} parameters hold NaN or infinity "
                        f"(first: {bad[0]})")
        raise TrainingDiverged(self.diverged_message(where, " and ".join(what), lr))

    def check_val(self, loss: float, where: str, lr: float) -> None:
        """TrainingDiverged if the val loss is non-finite (the weights are finite: checked)."""
        if not math.isfinite(loss):
            raise TrainingDiverged(self.diverged_message(
                where, f"the val loss is {loss} (the logits overflow)", lr))

    def diverged_message(self, where: str, what: str, lr: float) -> str:
        """The one line: where, what went non-finite, and how to go on (lower the lr, resume)."""
        last = latest_checkpoint(self.run_dir)
        then = (f"continue from the last good checkpoint with --resume {last}" if last else
                "no checkpoint was saved before it: run the same command again")
        return (f"training diverged at {where}: {what}. Nothing non-finite was saved. Lower the "
                f"learning rate (--lr, {lr:g} now; e.g. 10x lower) and {then} (exit status 3)")

    def loss_note(self, loss: float, last_of_first_epoch: bool, step: int) -> str:
        """Once, at a new run's LOSS_CHECK_SYNCS-th sync point or first epoch's end (whichever
        comes first): a note if the train loss is not below ln C; else ""."""
        self.syncs += 1
        if self.loss_checked or not (self.syncs >= LOSS_CHECK_SYNCS or last_of_first_epoch):
            return ""
        self.loss_checked = True
        if loss < self.chance_loss:
            return ""
        return (f"note: the train loss {loss:.3f} after {step} step{'s' * (step != 1)} is not "
                f"below ln({self.num_classes}) = {self.chance_loss:.3f}, a uniform guess's: the "
                f"run is not learning yet; {CAUSES}")

    def plateau_note(self, top1_err: float, samples: int, drops: int, old_lr: float,
                     new_lr: float) -> str:
        """Before the plateau rule's first lr drop while the val error is at chance: a note."""
        if drops != 1 or not at_chance(top1_err, self.num_classes, samples):
            return ""
        return (f"note: the val top-1 error {top1_err:.3f} is still at chance "
                f"({1 - 1 / self.num_classes:.3f} for {self.num_classes} classes) where the "
                f"plateau rule drops the lr for the first time ({old_lr:g} -> {new_lr:g}): the "
                f"run has not learned yet, and a lower lr rarely starts it; {CAUSES}")


def stop_error(problems: list[str], data: str, what_now: str) -> CorruptSampleError:
    """The one-line error every rank raises when the ranks agreed that damaged data stops the run
    (collective: gathers every rank's `problems`, so each names the same first shard and key)."""
    found = [line for lines in distributed.gather_objects(problems) for line in lines]
    first = found[0] if found else "a damaged shard on another rank"
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return CorruptSampleError(
        f"{first}{more}. {what_now}. `alexnet-dali verify --decode {data}` lists every damaged "
        "sample; rebuild a damaged shard (delete its .tar/.idx/.json and re-run `alexnet-dali "
        "preprocess` with the same options, or copy it again)")


class DamageTally:
    """A training run's view of its loaders' gates: what its sync points agree on, the damaged
    samples held back (per epoch and in all), and the lines and the error about them."""

    def __init__(self, train_gate: SampleGate | None, val_gate: SampleGate | None,
                 data: str) -> None:
        self.gate, self.val_gate, self.data = train_gate, val_gate, data
        self.stopped = False  # the ranks agreed that damaged data stops the run
        self.epoch_counts = [0, 0]  # train, val samples held back in the current epoch
        self.total = [0, 0]
        self.note = unchecked_note(train_gate, data) or unchecked_note(val_gate, data)

    def counts(self) -> list[float]:
        """This rank's (must stop, samples held back since the last sync point)."""
        if self.gate is None:
            return [0.0, 0.0]
        return [float(self.gate.must_stop), float(self.gate.take_masked())]

    def agreed(self, counts: Sequence[float]) -> bool:
        """Take a sync point's sums over ranks of `counts`; True if the run must stop."""
        self._add(0, int(counts[1]))
        self.stopped = self.stopped or counts[0] > 0
        return self.stopped

    def after_validation(self, result: dict[str, Any]) -> bool:
        """Take an `evaluate` result's damage; True if it must stop the run."""
        self._add(1, int(result.pop("skipped", 0)))
        self.stopped = self.stopped or bool(result.pop("damaged_stop", False))
        return self.stopped

    def _add(self, which: int, n: int) -> None:
        self.epoch_counts[which] += n
        self.total[which] += n

    def record(self, epoch: int, step: int) -> dict[str, Any] | None:
        """The epoch's metrics.jsonl line when samples were held back in it (then reset)."""
        train, val = self.epoch_counts
        self.epoch_counts = [0, 0]
        if not train and not val:
            return None
        return {"kind": "skipped", "epoch": epoch, "step": step, "train": train, "val": val}

    def summary(self) -> str:
        """The end-of-run line about the samples left out, or ""."""
        train, val = self.total
        if not train and not val:
            return ""
        seen = [line for g in (self.gate, self.val_gate) if g for line in g.problems()]
        example = f", e.g. {seen[0]}" if seen else ""
        return (f"left out damaged samples (--skip-bad-samples): {train} train and {val} val "
                f"sample reads{example} (\"skipped\" lines in metrics.jsonl); `alexnet-dali "
                f"verify --decode {self.data}` lists every damaged sample")

    def error(self, when: str, saved: Path | None) -> CorruptSampleError:
        """The stop error after the ranks agreed on it (collective: every rank calls it);
        `when` says where the run met the damage, `saved` is the checkpoint written then."""
        gates = [g for g in (self.gate, self.val_gate) if g is not None]
        return stop_error([line for g in gates for line in g.problems()], self.data,
                          f"{when}; saved {saved or 'a checkpoint'}: once the shard is rebuilt "
                          "continue with --resume, or --resume --skip-bad-samples to leave such "
                          "samples out")
