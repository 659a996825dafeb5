"""What a run is built from: the class count its data implies, seeds, devices, the network, the
loaders (DATA itself is read once, `loader/data.py`; the precision, `precision.py`).

Shared by the trainer, `eval` and `bench train`. The global batch is divided evenly across
ranks (`per_rank_batch`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.errors import ConfigError
from alexnet_dali.loader.build import eval_loader, train_loader
from alexnet_dali.loader.data import Data
from alexnet_dali.train.distributed import DistInfo


def resolve_for_data(cfg: TrainConfig, data: Data) -> TrainConfig:
    """Take num_classes from the dataset's manifest (the model must match the data)."""
    classes = data.num_classes(cfg.model.num_classes)
    if classes != cfg.model.num_classes:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=classes))
    return cfg


def seed_everything(cfg: TrainConfig, rank: int) -> None:
    """torch threads, deterministic kernels, and the python/numpy/torch seeds of one rank."""
    import random

    import numpy as np

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank


def channels_last_of(cfg: TrainConfig, device: torch.device) -> bool:
    """None -> channels_last on CUDA only."""
    return device.type == "cuda" if cfg.channels_last is None else cfg.channels_last


def build_network(cfg: TrainConfig, info: DistInfo) -> tuple[torch.nn.Module, torch.device]:
    """The model on its device(s) and the device its input goes to."""
    from alexnet_dali.model.alexnet import build_model
    from alexnet_dali.model.parallel import ModelParallelAlexNet

    if cfg.model_parallel:
        gpus = torch.cuda.device_count() if info.device.type == "cuda" else 0
        devices = model_parallel_devices(info.device, info.local_rank, gpus)
        return ModelParallelAlexNet(cfg.model, devices=devices), devices[0]
    model = build_model(cfg.model).to(info.device)
    if channels_last_of(cfg, info.device):
        model = model.to(memory_format=torch.channels_last)
    return model, info.device


def model_parallel_devices(device: torch.device, local_rank: int,
                           gpus: int) -> tuple[torch.device, torch.device]:
    """The devices of tower 1 and tower 2 for one rank: GPUs 2r and 2r+1 (r: local rank), or
    the CPU twice when the run is on the CPU (the split network, for testing: no speed-up).
    Fewer than two GPUs per rank is refused rather than silently sharing a GPU or using the
    CPU for one tower."""
    if device.type != "cuda":
        return torch.device("cpu"), torch.device("cpu")
    first = 2 * local_rank
    if first + 1 >= gpus:
        raise ConfigError(
            f"--model-parallel needs two GPUs per process: local rank {local_rank} would use "
            f"cuda:{first} and cuda:{first + 1}, but {gpus} GPU(s) are visible; drop "
            "--model-parallel (the grouped network computes the same on one GPU), or start "
            "half as many processes per node")
    return torch.device(f"cuda:{first}"), torch.device(f"cuda:{first + 1}")


def per_rank_batch(cfg: TrainConfig, world_size: int) -> int:
    """The global batch divided across ranks; an error if it does not divide evenly."""
    if cfg.batch_size % world_size:
        raise ConfigError(
            f"batch_size {cfg.batch_size} does not divide across {world_size} ranks; "
            f"pick a multiple of {world_size}"
        )
    return cfg.batch_size // world_size


def build_loaders(cfg: TrainConfig, data: Data, info: DistInfo, input_device: torch.device,
                  loader_ckpt: str | None) -> tuple[Any, Any]:
    """(train loader, val loader) for this rank, DALI-fed or synthetic (`loader/build.py`)."""
    batch = per_rank_batch(cfg, info.world_size)
    layout = "NHWC" if channels_last_of(cfg, input_device) else "NCHW"
    common = dict(batch_size=batch, rank=info.rank, world_size=info.world_size,
                  device=input_device, layout=layout)
    return (train_loader(data, cfg, checkpoint=loader_ckpt, **common),
            eval_loader(data, cfg, split="val", **common))
