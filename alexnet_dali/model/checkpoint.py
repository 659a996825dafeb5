"""Training checkpoints, the one home of their schema: the state dict the trainer saves
(`new_state`), atomic writes with keep-last-K, reading back (`load_checkpoint`,
`config_from_checkpoint`, `model_from_checkpoint`, the class list and colour statistics).
What a resume restores besides the weights, and whether it may, is in `train/resume.py`.

A checkpoint is `RUN/checkpoints/ckpt-EEEE-SSSSSSS.pt` (E: epoch, S: global step), a dict of
tensors, plain numbers, strings and lists only, so `torch.load(weights_only=True)` reads it.
Its weights are finite: `save_checkpoint` refuses to write, and `load_checkpoint` to read (for
eval, predict, export, --resume), one whose weights hold a NaN or an infinity.
A live trainer holds `RUN/.lock` (an OS file lock, `claim_run_dir`): a second trainer on the same
run dir is refused, and temporaries that a killed save left behind are deleted at start.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from alexnet_dali.config.resolve import from_dict, to_dict
from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.errors import CheckpointError
from alexnet_dali.model.alexnet import build_model
from alexnet_dali.tools.outdir import FolderLock, naming
from alexnet_dali.tools.pca import ColourStats

CKPT_RE = re.compile(r"^ckpt-(\d{4,})-(\d{7,})\.pt$")
RUN_LOCK = ".lock"  # RUN/.lock: held by the live trainer (rank 0) of a run dir
# Config keys added after checkpoints existed, with the value that reproduces how an older
# checkpoint was trained: the LRN read literally, weight decay on biases too.
LEGACY_CONFIG = {"model": {"lrn_formula": "text"}, "optim": {"bias_decay": True}}
FORMAT = "alexnet-dali-checkpoint"
FORMAT_VERSION = 1


def new_state(
    *, model: dict[str, torch.Tensor], config: TrainConfig, epoch: int, global_step: int,
    step_in_epoch: int = 0, optimizer: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None, rng: list[dict[str, Any]] | None = None,
    loader_checkpoints: list[str] | None = None, manifest_sha256: str | None = None,
    classes: list[list[str]] | None = None, world_size: int = 1,
    best_top1_err: float = float("inf"), colour_stats: ColourStats | None = None,
    source: dict[str, str] | None = None, devices: list[str] | None = None,
    image_size: int | None = None,
) -> dict[str, Any]:
    """The checkpoint dict (docs/DESIGN.md): `model` is the grouped net's state dict, `epoch` the
    0-based epoch in progress, `rng` and `loader_checkpoints` one entry per rank, `classes` the
    data's [name, words] per class id (read back by `saved_classes`); `colour_stats` the training
    data's (for predict/export), `source` where imported weights came from, `devices` where rank
    0's network ran (one device, or the two towers of --model-parallel), `image_size` the side of
    the training shards' images (None: unknown, e.g. synthetic data)."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": model, "optimizer": optimizer or {}, "scheduler": scheduler or {},
        "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
        "rng": rng or [], "loader_checkpoints": loader_checkpoints or [],
        "config": to_dict(config), "manifest_sha256": manifest_sha256, "classes": classes,
        "world_size": world_size, "best_top1_err": best_top1_err,
        "colour_stats": colour_stats_record(colour_stats) if colour_stats else None,
        "source": source, "devices": devices or [], "image_size": image_size,
    }


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where a run keeps its checkpoints."""
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first (by global step, then epoch)."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CKPT_RE.match(path.name)
        if match:
            found.append((int(match.group(2)), int(match.group(1)), path))
    return [path for _, _, path in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def claim_run_dir(run_dir: str | Path) -> FolderLock:
    """Lock RUN for this trainer (FolderInUse naming the holder if a live one has it) and delete
    the temporaries of saves that a kill interrupted (safe: holding the lock, no one else saves).
    """
    lock = FolderLock(Path(run_dir) / RUN_LOCK, "wait for that run to end or choose another "
                                                "--run-dir").acquire()
    if lock.locked and checkpoint_dir(run_dir).is_dir():
        for tmp in checkpoint_dir(run_dir).glob(".ckpt-*.pt.tmp-*"):
            tqdm.write(f"removing {tmp}: left by a save that was killed")
            tmp.unlink(missing_ok=True)
    return lock


def _write(state: dict[str, Any], tmp: Path) -> None:
    """torch.save to `tmp` and fsync; on failure delete `tmp` and raise the OS error if any."""
    try:
        with naming(tmp), tmp.open("wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e.__context__  # torch.save reports a failed write as a RuntimeError
        if isinstance(e, RuntimeError) and isinstance(cause, OSError):
            cause.filename = cause.filename or str(tmp)
            raise cause from e
        raise


def first_nonfinite(tensors: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None.

    One host sync for the whole dict (checkpoints are read or written whole anyway).
    """
    named = [(k, t) for k, t in tensors.items() if torch.is_tensor(t) and t.is_floating_point()]
    if not named:
        return None
    device = named[0][1].device
    bad = torch.stack([(~torch.isfinite(t).all()).to(device) for _, t in named]).tolist()
    return next((name for (name, _), flag in zip(named, bad) if flag), None)


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int) -> Path:
    """Write `state` atomically (temp file, fsync, rename, fsync dir); keep the newest `keep`.

    Non-finite weights are refused (the trainer stops before; this keeps the promise for every
    writer)."""
    directory = checkpoint_dir(run_dir)
    path = directory / f"ckpt-{state['epoch']:04d}-{state['global_step']:07d}.pt"
    bad = first_nonfinite(state["model"])
    if bad is not None:
        raise CheckpointError(f"{path}: not written: its weights are not finite ({bad} holds "
                              "NaN or infinity); the checkpoints already there are kept")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.tmp-{os.getpid()}"
    _write(state, tmp)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(run_dir)[: -max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def set_aside_newer(run_dir: str | Path, global_step: int) -> list[Path]:
    """Move checkpoints newer than `global_step` to checkpoints/abandoned/ (an older resume).

    Otherwise the abandoned branch's newer files would outlive the pruning and a later bare
    `--resume` would pick them up. They are moved, not deleted: nothing already done is lost.
    """
    newer = [path for path in list_checkpoints(run_dir)
             if int(CKPT_RE.match(path.name).group(2)) > global_step]
    if newer:
        aside = checkpoint_dir(run_dir) / "abandoned"
        aside.mkdir(exist_ok=True)
        for path in newer:
            os.replace(path, aside / path.name)
    return newer


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; a clear error if it is missing or broken."""
    path = Path(path)
    if path.is_dir():  # a run dir or its checkpoints dir: take the newest
        newest = latest_checkpoint(path) or latest_checkpoint(path.parent)
        if newest is None:
            raise CheckpointError(f"{path}: no ckpt-*.pt checkpoints found; train first")
        path = newest
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass a ckpt-*.pt file or a run dir")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointError(f"{path}: not a readable checkpoint ({e}); use another one") from e
    missing = {"model", "config", "epoch", "global_step"} - set(state)
    if missing:
        raise CheckpointError(f"{path}: not an alexnet-dali checkpoint (no {sorted(missing)})")
    state["path"] = str(path)
    bad = first_nonfinite(state["model"])
    if bad is not None:
        raise CheckpointError(
            f"{path}: its weights are not finite ({bad} holds NaN or infinity; the run diverged "
            "before this checkpoint was saved), so it can neither score nor continue anything; "
            "use an earlier checkpoint of that run, or train again with a lower lr")
    for section, values in LEGACY_CONFIG.items():
        for key, value in values.items():
            state["config"].setdefault(section, {}).setdefault(key, value)
    return state


def config_from_checkpoint(state: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with."""
    where = f"{state.get('path', 'checkpoint')}:config"
    return from_dict(TrainConfig, state["config"], where=where)


def model_from_checkpoint(state: dict[str, Any]) -> tuple[torch.nn.Module, TrainConfig]:
    """The one-device network (CPU, eval mode) with a checkpoint's weights, and its TrainConfig.

    Checkpoints always hold the grouped layout (also from --model-parallel runs).
    """
    cfg = config_from_checkpoint(state)
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def saved_classes(state: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The checkpoint's class list, (name, words) per class id (`new_state`'s `classes`); None
    where it records none (synthetic data, or written before class lists were saved)."""
    saved = state.get("classes")
    return [(str(name), str(words)) for name, words in saved] if saved else None


def check_same_classes(state: dict[str, Any], data_classes: list[str] | None, data: str) -> None:
    """Refuse to score a checkpoint on shards DATA whose class list (`data_classes`, the names in
    id order; None for synthetic data) is another (same ids, same WNIDs)."""
    saved = saved_classes(state)
    if saved is None or data_classes is None:  # checkpoints from before class lists were saved
        return
    mine, theirs = list(data_classes), [name for name, _ in saved]
    if mine != theirs:
        i = next((i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b),
                 min(len(mine), len(theirs)))
        there, here = ((names + ["none"])[min(i, len(names))] for names in (theirs, mine))
        raise CheckpointError(f"{state.get('path', 'checkpoint')} was trained on another "
                              f"class list than {data} ({len(theirs)} vs {len(mine)} classes; "
                              f"class id {i} is {there} there, {here} here); evaluate it on "
                              "shards with its classes")


def check_image_size(state: dict[str, Any], image_size: int | None, source: str) -> None:
    """Refuse images (of side `image_size`, from `source`) smaller than the checkpoint's view
    (augment.crop): a clear error instead of a failure inside the eval graph or views."""
    crop = int(state["config"].get("augment", {}).get("crop", 224))
    if image_size is None or image_size >= crop:
        return
    trained = state.get("image_size")
    on = f", trained on {trained}x{trained} shards" if trained else ""
    fix = (f"shards made with `alexnet-dali preprocess --size {trained}`" if trained else
           f"shards made with `alexnet-dali preprocess --size` of at least {crop}")
    raise CheckpointError(f"{source}: its images are {image_size}x{image_size}, smaller than the "
                          f"{crop}x{crop} view {state.get('path', 'the checkpoint')} takes "
                          f"(augment.crop = {crop}{on}); use {fix}")


def colour_stats_record(stats: ColourStats) -> dict[str, Any]:
    """The training data's colour statistics as a checkpoint entry (the mean image as a tensor),
    so `predict` and `export` normalise like training without the shards at hand."""
    record: dict[str, Any] = {
        "mean": list(stats.mean), "std": list(stats.std),
        "eigenvalues": list(stats.eigenvalues),
        "eigenvectors": [list(row) for row in stats.eigenvectors],
    }
    if stats.mean_image is not None:
        record["mean_image"] = torch.from_numpy(np.ascontiguousarray(stats.mean_image,
                                                                     dtype=np.float32))
    return record


def recorded_colour_stats(state: dict[str, Any]) -> ColourStats | None:
    """Inverse of `colour_stats_record`; None for a checkpoint that records none."""
    record = state.get("colour_stats")
    if not record:
        return None
    image = record.get("mean_image")
    return ColourStats(
        mean=tuple(record["mean"]), std=tuple(record["std"]),
        eigenvalues=tuple(record["eigenvalues"]),
        eigenvectors=tuple(tuple(row) for row in record["eigenvectors"]),
        mean_image=None if image is None else image.numpy().astype(np.float32),
    )
