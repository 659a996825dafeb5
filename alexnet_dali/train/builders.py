"""What a run is built from: the dataset's facts, devices, precision, the network, the loaders.

Shared by the trainer, `eval` and `bench train`. The global batch is divided evenly across
ranks (`per_rank_batch`); data "synthetic" swaps the DALI loaders for `synthetic.py`'s.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.errors import ConfigError, DataError
from alexnet_dali.train.distributed import DistInfo
from alexnet_dali.tools.pca import ColourStats, load_colour_stats
from alexnet_dali.tools.manifest import read_manifest
from alexnet_dali.tools.verify import first_file_problem

SYNTHETIC = "synthetic"


def manifest_sha256(data: str) -> str | None:
    """sha256 of DATA/manifest.json's bytes (DESIGN.md), None for synthetic data."""
    return None if data == SYNTHETIC else read_manifest(data).sha256


def class_list(data: str) -> list[list[str]] | None:
    """DATA's classes in id order as [name (WNID), words] pairs, carried into checkpoints; None
    for synthetic data."""
    return None if data == SYNTHETIC else [[c.name, c.words] for c in read_manifest(data).classes]


def image_size_of(data: str) -> int | None:
    """The side of DATA's square shard images (manifest settings, `preprocess --size`); None for
    synthetic data."""
    if data == SYNTHETIC:
        return None
    return int(read_manifest(data).settings.get("size", 256))


def check_shard_files(data: str, splits: tuple[str, ...] = ("train", "val")) -> None:
    """The cheap start check: every shard of `splits` there with its recorded size (DataError
    naming the first that is not; `verify` checks the bytes)."""
    if data == SYNTHETIC:
        return
    manifest = read_manifest(data)
    for split in splits:
        problem = first_file_problem(manifest, split) if split in manifest.splits else None
        if problem is not None:
            raise DataError(problem)


def resolve_for_data(cfg: TrainConfig) -> TrainConfig:
    """Take num_classes from the dataset's manifest (the model must match the data)."""
    if cfg.data == SYNTHETIC:
        return cfg
    classes = len(read_manifest(cfg.data).classes)
    if classes != cfg.model.num_classes:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=classes))
    return cfg


def colour_stats_of(cfg: TrainConfig) -> ColourStats | None:
    """The training data's pca.json statistics (with the mean image if the recipe uses it)."""
    if cfg.data == SYNTHETIC:
        return None
    return load_colour_stats(cfg.data, need_mean_image=cfg.augment.mean == "image")


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


def precision_of(cfg: TrainConfig, device: torch.device) -> str:
    """auto -> bf16 on CUDA, fp32 elsewhere."""
    if cfg.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return cfg.precision


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


def build_loaders(cfg: TrainConfig, info: DistInfo, input_device: torch.device,
                  loader_ckpt: str | None) -> tuple[Any, Any]:
    """(train loader, val loader) for this rank, DALI-fed or synthetic."""
    batch = per_rank_batch(cfg, info.world_size)
    layout = "NHWC" if channels_last_of(cfg, input_device) else "NCHW"
    if cfg.data == SYNTHETIC:
        from alexnet_dali.loader.synthetic import SyntheticEvalLoader, SyntheticTrainLoader

        train = SyntheticTrainLoader(
            batch_size=batch, steps_per_epoch=cfg.max_steps_per_epoch or 8,
            num_classes=cfg.model.num_classes, rank=info.rank, world_size=info.world_size,
            device=input_device, seed=cfg.seed, channels_last=layout == "NHWC",
            checkpoint=loader_ckpt)
        val = SyntheticEvalLoader(samples=2 * cfg.batch_size, batch_size=batch,
                                  num_classes=cfg.model.num_classes, rank=info.rank,
                                  world_size=info.world_size, device=input_device)
        return train, val
    from alexnet_dali.loader.eval import build_eval_loader
    from alexnet_dali.loader.train import build_train_loader

    loader_cfg = dataclasses.replace(cfg.loader, layout=layout)
    common = dict(loader=loader_cfg, augment=cfg.augment, batch_size=batch, rank=info.rank,
                  world_size=info.world_size, device=input_device)
    train = build_train_loader(cfg.data, seed=cfg.seed, checkpoint=loader_ckpt, **common)
    val = build_eval_loader(cfg.data, split="val", tencrop=False, **common)
    return train, val
