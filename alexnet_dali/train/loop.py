"""The training loop: one or many ranks (torchrun + DDP), validation each epoch, exact resume.

`train()` opens DATA once (`loader/data.py`), refuses what cannot be resumed, builds the `Run`
(`run.py`) and trains its epochs: DALI loaders (`loader/train.py`, `loader/eval.py`) or, with data
"synthetic", `loader/synthetic.py`'s. The global batch is split evenly across ranks. Checkpoints
hold everything needed to continue mid-epoch bit for bit (model, optimiser, schedule, RNG states,
each rank's loader position).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from alexnet_dali.config.resolve import save_resolved_config
from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.errors import TrainingDiverged, signal_exit_status
from alexnet_dali.loader.data import Data, open_data
from alexnet_dali.model import checkpoint as ckpt_io
from alexnet_dali.tools.outdir import explained
from alexnet_dali.tools.storage import StorageError
from alexnet_dali.train import distributed, resume as resume_io  # `resume`: train()'s argument
from alexnet_dali.train.builders import resolve_for_data
from alexnet_dali.train.cadence import Agreement, EpochTrain, LossWindow, StopRequest, is_sync_point
from alexnet_dali.train.distributed import DistInfo
from alexnet_dali.train.run import Run
from alexnet_dali.train.runlog import (at_chance, chance_note, complete_line, devices_line,
                                       resume_line)
from alexnet_dali.train.runreport import epoch_line, summary_lines
from alexnet_dali.train.steps import endless
from alexnet_dali.train.validate import evaluate

RESUME_HINT = ("continue with --resume (from the newest complete checkpoint; if none was saved "
               "yet, run the same command again)")


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
        run.schedule.at_step(pos.global_step)
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
    dropped = run.schedule.end_epoch(pos.epoch, result["top1_err"], at_chance(
        result["top1_err"], run.cfg.model.num_classes, result["samples"]))
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


def resume_state(cfg: TrainConfig, resume: str | Path | dict[str, Any] | None,
                 info: DistInfo) -> dict[str, Any] | None:
    """The checkpoint to resume (loaded if named by path), checked against this run: the network
    may not change, and a run dir that holds checkpoints is continued only with --resume. Newer
    checkpoints than the one resumed are set aside (rank 0)."""
    state = ckpt_io.load_checkpoint(resume) if isinstance(resume, (str, Path)) else resume
    if state is not None:
        resume_io.check_same_network(state, cfg)
    existing = ckpt_io.latest_checkpoint(cfg.run_dir)
    if state is None and existing is not None:
        raise ckpt_io.CheckpointError(
            f"{cfg.run_dir}: already holds checkpoints ({existing.name}); pass --resume to "
            "continue that run, or choose another --run-dir")
    if state is not None and int(state["epoch"]) < cfg.epochs and info.is_main:
        for path in ckpt_io.set_aside_newer(cfg.run_dir, int(state["global_step"])):
            tqdm.write(f"{path.name} is newer than the checkpoint resumed from: moved to "
                       f"{path.parent / 'abandoned'}")
    return state


def announce(run: Run, state: dict[str, Any] | None) -> None:
    """Rank 0, before the first step: RUN/config.json, and the lines about this start (a note,
    where a resume continues, the settings it changes, the towers' devices, unchecked shards)."""
    cfg, pos = run.cfg, run.pos
    save_resolved_config(cfg)
    resumed = state and resume_line(state["path"], pos.epoch, cfg.epochs, pos.step_in_epoch,
                                    _steps_this_epoch(run), pos.global_step)
    for line in (run.log.note, resumed, state and resume_io.changed_settings(state, cfg),
                 cfg.model_parallel and devices_line(run.devices), run.damage.note):
        if line:
            tqdm.write(line)


def train_epochs(run: Run, stop: StopRequest) -> tuple[bool, dict[str, float]]:
    """The epochs left: (whether all ran, the last validation). A stop signal saves and ends
    early; damaged data that stops the run raises, having saved."""
    last: dict[str, float] = {}
    while run.pos.epoch < run.cfg.epochs:
        with _saved_on_storage_failure(run):
            if not _run_epoch(run, stop):
                path = run.save()
                if run.damage.stopped:
                    raise run.damage.error(f"It was held back from every step; the run "
                                           f"stopped at {run.pos.describe()}", path)
                if run.info.is_main:
                    tqdm.write(f"{stop.signal_name}: saved {path} at epoch "
                               f"{run.pos.epoch + 1} step {run.pos.step_in_epoch}; exit "
                               f"status {signal_exit_status(stop.signal_name)}; continue "
                               "with --resume")
                return False, last
            last = _end_epoch(run)
    return True, last


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
        state = resume_state(cfg, resume, info)
        if state is not None and int(state["epoch"]) >= cfg.epochs:
            if info.is_main:
                tqdm.write(complete_line(state["path"], state["epoch"], cfg.epochs,
                                         state["global_step"]))
            return {"completed": True, "epoch": int(state["epoch"]), "val": {}, "signal": "",
                    "global_step": int(state["global_step"])}
        run = Run(cfg, data, info, state, allow_mismatch)
        if info.is_main:
            announce(run, state)
        first_epoch = run.pos.epoch
        completed, last = train_epochs(run, stop)
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
