"""What one training process holds (`Run`): the network (maybe DDP-wrapped), optimiser, lr
schedule, loaders, run log and health checks, built from the config and DATA; where it stands
(`Position`); restoring all of it from a checkpoint, and saving it (a collective)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.loader.data import Data
from alexnet_dali.model import checkpoint as ckpt_io
from alexnet_dali.train import distributed, resume as resume_io
from alexnet_dali.train.builders import build_loaders, build_network, seed_everything
from alexnet_dali.train.precision import precision_of
from alexnet_dali.train.cadence import EpochTrain
from alexnet_dali.train.distributed import DistInfo
from alexnet_dali.train.health import DamageTally, Health
from alexnet_dali.train.optim import build_optimizer, group_sizes, load_optimizer_state
from alexnet_dali.train.runlog import RunLog
from alexnet_dali.train.schedule import LRSchedule
from alexnet_dali.train.steps import TrainStep


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
        self.schedule = LRSchedule(self.optimizer, cfg.optim, cfg.batch_size)
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
