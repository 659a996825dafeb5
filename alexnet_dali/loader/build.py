"""The loaders of one rank for DATA: DALI-fed from a shard folder, generated for synthetic data.

The one place that picks loaders by the kind of DATA (`loader/data.py`); DALI is imported only
for a shard folder.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.loader.data import Data, SyntheticData

SYNTHETIC_STEPS = 8  # a synthetic epoch's steps unless max_steps_per_epoch cuts it


def train_loader(data: Data, cfg: TrainConfig, *, batch_size: int, rank: int, world_size: int,
                 device: torch.device, layout: str, checkpoint: str | None = None) -> Any:
    """This rank's training loader, `batch_size` (per rank) samples a batch in `layout`
    (NCHW, or NHWC: channels_last); `checkpoint` (its `checkpoint()`) resumes it."""
    if isinstance(data, SyntheticData):
        from alexnet_dali.loader.synthetic import SyntheticTrainLoader

        return SyntheticTrainLoader(
            batch_size=batch_size, steps_per_epoch=cfg.max_steps_per_epoch or SYNTHETIC_STEPS,
            num_classes=cfg.model.num_classes, rank=rank, world_size=world_size, device=device,
            seed=cfg.seed, channels_last=layout == "NHWC", checkpoint=checkpoint)
    from alexnet_dali.loader.train import build_train_loader

    return build_train_loader(data, loader=replace(cfg.loader, layout=layout),
                              augment=cfg.augment, batch_size=batch_size, rank=rank,
                              world_size=world_size, device=device, seed=cfg.seed,
                              checkpoint=checkpoint)


def eval_loader(data: Data, cfg: TrainConfig, *, split: str = "val", batch_size: int, rank: int,
                world_size: int, device: torch.device, layout: str = "NCHW",
                tencrop: bool = False, num_threads: int | None = None) -> Any:
    """This rank's loader of `split`, `batch_size` (per rank) samples a batch, center crop or
    ten views; synthetic data: 2 global batches (`cfg.batch_size`) of samples."""
    if isinstance(data, SyntheticData):
        from alexnet_dali.loader.synthetic import SyntheticEvalLoader

        return SyntheticEvalLoader(samples=2 * cfg.batch_size, batch_size=batch_size,
                                   num_classes=cfg.model.num_classes, rank=rank,
                                   world_size=world_size, device=device, tencrop=tencrop)
    from alexnet_dali.loader.eval import build_eval_loader

    loader = replace(cfg.loader, layout=layout, num_threads=num_threads or cfg.loader.num_threads)
    return build_eval_loader(data, split=split, loader=loader, augment=cfg.augment,
                             batch_size=batch_size, rank=rank, world_size=world_size,
                             device=device, tencrop=tencrop)
