"""The training loop: one or many ranks (torchrun + DDP), validation each epoch, exact resume.

Data comes from the DALI loaders (`loader/train.py`, `loader/eval.py`) or, with data "synthetic",
from `loader/synthetic.py`.
The global batch is split evenly across ranks. Checkpoints hold everything needed to continue
mid-epoch bit for bit (model, optimiser, schedule, RNG states, each rank's loader position).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from alexnet_dali.model import checkpoint as ckpt_io
from alexnet_dali.train import distributed, resume as resume_io  # `resume`: train()'s argument
from alexnet_dali.loader.data import Data, open_data
from alexnet_dali.train.builders import (
    build_loaders,
    build_network,
    precision_of,
    resolve_for_data,
    seed_everything,
)
from alexnet_dali.train.cadence import Agreement, EpochTrain, LossWindow, StopRequest, is_sync_point
from alexnet_dali.config.resolve import save_resolved_config
from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.train.distributed import DistInfo
from alexnet_dali.errors import TrainingDiverged, signal_exit_status
from alexnet_dali.train.validate import evaluate
from alexnet_dali.train.health import DamageTally, Health
from alexnet_dali.train.optim import LRSchedule, build_optimizer, group_sizes, load_optimizer_state
from alexnet_dali.train.runlog import RunLog, chance_note, complete_line, devices_line, resume_line
from alexnet_dali.train.runreport import epoch_line, summary_lines
from alexnet_dali.train.steps import TrainStep, endless
from alexnet_dali.tools.outdir import explained
from alexnet_dali.tools.storage import StorageError

RESUME_HINT = ("continue with --resume (from the newest complete checkpoint; if none was saved "
               "yet, run the same command again)")

@dataclasses.dataclass
class Position:
    """Where the run stands: 0-based epoch, optimiser steps done in it, steps done in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0

    def describe(self, total: int | None = None) -> str:
        """For messages: "epoch 1, step 4 of 8 (global step 4)" (`total`: the epoch's steps)."""
        of = f" of {total}" if total else ""
        return (f"epoch {self.epoch + 1}, step {self.step_in_epoch}{of} "
                f"(global step {self.global_step})")


class Run:
    """Everything one training process holds; `train()` drives it."""

    def __init__(self, cfg: TrainConfig, data: Data, info: DistInfo,
                 resume: dict[str, Any] | None, allow_mismatch: bool):
        self.cfg, self.info = cfg, info
        self.manifest_sha256 = data.sha256
        self.classes = data.classes
        self.precision = precision_of(cfg, info.device)
        # recorded in checkpoints for predict/export
        self.colour_stats = data.colour_stats(need_mean_image=cfg.augment.mean == "image")
        self.image_size = data.image_size  # recorded too: eval/predict check theirs
        seed_everything(cfg, info.rank)
        self.net, self.input_device = build_network(cfg, info)
        self.devices = tuple(getattr(self.net, "devices", (self.input_device,)))  # rank 0's
        torch.manual_seed(cfg.seed * 1000 + info.rank + 1)  # own dropout masks per rank
        self.model = self.net
        if info.world_size > 1:
            ids = [info.device] if info.device.type == "cuda" and not cfg.model_parallel else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = build_optimizer(self.net.parameters(), cfg.optim)
        self.schedule = LRSchedule(self.optimizer, cfg.optim)
        self.pos, self.best_top1_err = Position(), float("inf")
        self.epoch_train = EpochTrain()  # the current epoch's train loss and error so far
        loader_ckpt = self._restore(resume, allow_mismatch) if resume else None
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.step = TrainStep(self.model, self.optimizer, self.input_device, self.precision)
        self.train_loader, self.val_loader = build_loaders(cfg, data, info, self.input_device,
                                                           loader_ckpt)
        self.log = RunLog(cfg.run_dir, enabled=info.is_main, tensorboard=cfg.tensorboard)
        self.health = Health(self.net, cfg.model.num_classes, cfg.run_dir, bool(resume))
        self.damage = DamageTally(getattr(self.train_loader, "gate", None),
                                  getattr(self.val_loader, "gate", None), cfg.data)
        if resume:  # lines logged after the checkpoint will be logged again
            self.log.drop_after(self.pos.global_step)

    def _restore(self, state: dict[str, Any], allow_mismatch: bool) -> str | None:
        """Load a checkpoint's states; returns this rank's loader checkpoint (None if refused)."""
        problems = resume_io.check_compatible(
            state, world_size=self.info.world_size, batch_size=self.cfg.batch_size,
            manifest_sha256=self.manifest_sha256, allow_mismatch=allow_mismatch)
        fresh_optimizer = resume_io.optimizer_changes(
            state, model_parallel=self.cfg.model_parallel, update=self.cfg.optim.update,
            group_sizes=group_sizes(self.optimizer.state_dict()), allow_mismatch=allow_mismatch)
        self.net.load_state_dict(state["model"])
        if fresh_optimizer:
            tqdm.write("resuming with a fresh optimizer state (momentum 0): "
                       + "; ".join(fresh_optimizer))
        else:
            load_optimizer_state(self.optimizer, state["optimizer"])
        self.pos = Position(state["epoch"], state["step_in_epoch"], state["global_step"])
        self.schedule.load_state_dict(state["scheduler"], self.pos.epoch)
        self.best_top1_err = float(state.get("best_top1_err", float("inf")))
        if problems:  # data position cannot carry over: restart the epoch's data
            self.pos.step_in_epoch = 0
            return None
        resume_io.restore_rng(state["rng"][self.info.rank])
        return state["loader_checkpoints"][self.info.rank]

    def save(self) -> Path | None:
        """Checkpoint now (collective: every rank must call it); rank 0 writes."""
        loader_ckpts = distributed.gather_objects(self.train_loader.checkpoint())
        rngs = distributed.gather_objects(resume_io.capture_rng())
        state = ckpt_io.new_state(
            model=self.net.state_dict(), config=self.cfg, epoch=self.pos.epoch,
            global_step=self.pos.global_step, step_in_epoch=self.pos.step_in_epoch,
            optimizer=self.optimizer.state_dict(), scheduler=self.schedule.state_dict(),
            rng=rngs, loader_checkpoints=loader_ckpts, manifest_sha256=self.manifest_sha256,
            classes=self.classes, world_size=self.info.world_size,
            best_top1_err=self.best_top1_err, colour_stats=self.colour_stats,
            devices=[str(d) for d in self.devices], image_size=self.image_size)
        if not self.info.is_main:
            return None
        return ckpt_io.save_checkpoint(self.cfg.run_dir, state, self.cfg.keep_checkpoints)


def _steps_this_epoch(run: Run) -> int:
    steps = run.train_loader.steps_per_epoch
    limit = run.cfg.max_steps_per_epoch
    return min(steps, limit) if limit else steps


def _run_epoch(run: Run, stop: StopRequest) -> bool:
    """Train the rest of the current epoch; False if a stop signal ended it early."""
    cfg, info, pos = run.cfg, run.info, run.pos
    total = _steps_this_epoch(run)
    if pos.step_in_epoch >= total:  # stopped right after the epoch's last step
        return True
    bar = tqdm(total=total, initial=pos.step_in_epoch, desc=f"epoch {pos.epoch + 1}/{cfg.epochs}",
               disable=not info.is_main, dynamic_ncols=True, leave=False)
    window, run.epoch_train = LossWindow(), EpochTrain()
    alone = not distributed.active()
    for images, labels in endless(run.train_loader):
        window.add(run.step(images, labels), images.shape[0] * info.world_size)
        pos.step_in_epoch += 1
        pos.global_step += 1
        bar.update(1)
        stopping, halted = alone and stop.pending(), False
        if is_sync_point(cfg, pos.step_in_epoch, total) or stopping:
            agreed = window.agree(stop.pending(), info.world_size, run.damage.counts(),
                                  run.health.device_values(run.input_device))
            run.epoch_train.add(agreed)
            bar.set_postfix(loss=f"{agreed.loss:.3f}", err=f"{agreed.top1_err:.3f}",
                            lr=f"{run.schedule.lr:.2g}", img_s=f"{agreed.images_per_s:.1f}")
            run.log.write({"kind": "train", "epoch": pos.epoch + 1, "step": pos.global_step,
                           "loss": agreed.loss, "top1_err": agreed.top1_err,
                           "lr": run.schedule.lr, "images_per_s": agreed.images_per_s})
            window.reset()
            stopping, halted = agreed.stop, _check_sync(run, agreed, total, bar)
        if stopping or halted:
            if stopping:
                stop.follow()
            bar.close()
            return False
        if pos.step_in_epoch >= total:
            break
        if cfg.checkpoint_every and pos.step_in_epoch % cfg.checkpoint_every == 0:
            run.save()
            window.reset()  # img/s excludes the save
    bar.close()
    return True


def _check_sync(run: Run, agreed: Agreement, total: int, bar: tqdm) -> bool:
    """A sync point's checks: a non-finite loss or weight raises TrainingDiverged (the bar
    closed first: the error gets a line of its own); a note if a new run's loss is not below
    chance; True if damaged data stops the run."""
    pos = run.pos
    try:
        run.health.check(agreed, pos.describe(total), run.schedule.lr)
    except TrainingDiverged:
        bar.close()
        raise
    note = run.health.loss_note(agreed.loss, pos.epoch == 0 and pos.step_in_epoch == total,
                                pos.global_step)
    if note and run.info.is_main:
        tqdm.write(note)
    return run.damage.agreed(agreed.counts)


def _end_epoch(run: Run) -> dict[str, float]:
    """Validate, log, step the schedule, move to the next epoch and checkpoint."""
    pos = run.pos
    bar = tqdm(total=len(run.val_loader), desc="validating", leave=False, dynamic_ncols=True,
               disable=not run.info.is_main)
    result = evaluate(run.net, run.val_loader, device=run.info.device, precision=run.precision,
                      input_device=run.input_device, progress=bar)
    bar.close()
    run.log.write({"kind": "val", "epoch": pos.epoch + 1, "step": pos.global_step,
                   "loss": result["loss"], "top1_err": result["top1_err"],
                   "top5_err": result["top5_err"]})
    run.health.check_val(result["loss"], f"the end of epoch {pos.epoch + 1} (global step "
                                         f"{pos.global_step})", run.schedule.lr)
    damaged = run.damage.after_validation(result)
    skipped = run.damage.record(pos.epoch + 1, pos.global_step)
    if skipped:
        run.log.write(skipped)
    run.best_top1_err = min(run.best_top1_err, result["top1_err"])
    old_lr = run.schedule.lr
    dropped = run.schedule.end_epoch(pos.epoch, result["top1_err"])
    pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
    saved = run.save()
    if run.info.is_main:
        note = dropped and run.health.plateau_note(result["top1_err"], result["samples"],
                                                   run.schedule.drops, old_lr, run.schedule.lr)
        if note:  # before the line that reports the drop
            tqdm.write(note)
        classes = run.cfg.model.num_classes
        tqdm.write(epoch_line(pos.epoch, result, run.epoch_train.result(), classes,
                              run.schedule.lr if dropped else None, saved))
        note = chance_note(result["top1_err"], classes, result["samples"], pos.epoch)
        if note:
            tqdm.write(note)
    if damaged:
        raise run.damage.error(f"Validation met it at the end of epoch {pos.epoch} (not scored)",
                               saved)
    return result


@contextlib.contextmanager
def _saved_on_storage_failure(run: Run):
    """Shards in object storage that stop answering mid-run: checkpoint where the run stands
    and stop with one error line. Alone only: under DDP the other ranks, waiting in a
    collective, cannot join a save (torchrun stops them; resume from the newest checkpoint)."""
    try:
        yield
    except StorageError as e:
        if distributed.active():
            raise
        path = run.save()
        raise StorageError(f"{e}; saved {path} at epoch {run.pos.epoch + 1} step "
                           f"{run.pos.step_in_epoch}: when the storage answers again, run the "
                           "same command with --resume") from e


def train(cfg: TrainConfig, *, resume: str | Path | dict[str, Any] | None = None,
          allow_mismatch: bool = False, data: Data | None = None) -> dict[str, Any]:
    """Train per `cfg`, resuming from a checkpoint (file, run dir or loaded dict); a summary.
    `data`: cfg.data opened (`loader.data.open_data`), else it is opened here."""
    started = time.monotonic()
    info = distributed.setup(cfg.device)
    stop = StopRequest()
    lock = run = None
    try:
        data = open_data(cfg.data if data is None else data)  # DATA read once, passed down
        data.check_files()  # before the run dir: a refused start leaves none behind
        cfg = resolve_for_data(cfg, data)
        if info.is_main:  # one trainer per run dir; rank 0 speaks for the job
            lock = ckpt_io.claim_run_dir(cfg.run_dir)
        state = ckpt_io.load_checkpoint(resume) if isinstance(resume, (str, Path)) else resume
        if state is not None:
            resume_io.check_same_network(state, cfg)
        existing = ckpt_io.latest_checkpoint(cfg.run_dir)
        if state is None and existing is not None:
            raise ckpt_io.CheckpointError(
                f"{cfg.run_dir}: already holds checkpoints ({existing.name}); pass --resume to "
                "continue that run, or choose another --run-dir")
        if state is not None and int(state["epoch"]) >= cfg.epochs:
            if info.is_main:
                tqdm.write(complete_line(state["path"], state["epoch"], cfg.epochs,
                                         state["global_step"]))
            return {"completed": True, "epoch": int(state["epoch"]), "val": {}, "signal": "",
                    "global_step": int(state["global_step"])}
        if state is not None and info.is_main:
            for path in ckpt_io.set_aside_newer(cfg.run_dir, int(state["global_step"])):
                tqdm.write(f"{path.name} is newer than the checkpoint resumed from: moved to "
                           f"{path.parent / 'abandoned'}")
        run = Run(cfg, data, info, state, allow_mismatch)
        if info.is_main:
            save_resolved_config(cfg)
            resumed = state and resume_line(state["path"], run.pos.epoch, cfg.epochs,
                                            run.pos.step_in_epoch, _steps_this_epoch(run),
                                            run.pos.global_step)
            for line in (run.log.note, resumed, state and resume_io.changed_settings(state, cfg),
                         cfg.model_parallel and devices_line(run.devices), run.damage.note):
                if line:
                    tqdm.write(line)
        last: dict[str, float] = {}
        completed, first_epoch = True, run.pos.epoch
        while run.pos.epoch < cfg.epochs:
            with _saved_on_storage_failure(run):
                if not _run_epoch(run, stop):
                    path = run.save()
                    if run.damage.stopped:
                        raise run.damage.error(f"It was held back from every step; the run "
                                               f"stopped at {run.pos.describe()}", path)
                    if info.is_main:
                        tqdm.write(f"{stop.signal_name}: saved {path} at epoch "
                                   f"{run.pos.epoch + 1} step {run.pos.step_in_epoch}; exit "
                                   f"status {signal_exit_status(stop.signal_name)}; continue "
                                   "with --resume")
                    completed = False
                    break
                last = _end_epoch(run)
        if info.is_main and run.damage.summary():
            tqdm.write(run.damage.summary())
        if completed and info.is_main:
            for line in summary_lines(cfg, first_epoch, time.monotonic() - started):
                tqdm.write(line)
        return {"completed": completed, "epoch": run.pos.epoch, "global_step": run.pos.global_step,
                "val": last, "signal": stop.signal_name}
    except OSError as e:  # disk full, read-only, ...: one line saying what to do
        error = explained(e, RESUME_HINT, cfg.run_dir)
        if error is None:
            raise
        raise error from e
    finally:
        if run is not None:  # also when an error ends the run: flush TensorBoard's files
            run.log.close()
        if lock is not None:
            lock.release()
        stop.restore()
        distributed.cleanup()

