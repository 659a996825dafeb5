"""Training checkpoints, the one home of their schema: the state dict the trainer saves
(`new_state`), atomic writes with keep-last-K, reading back (`load_checkpoint`,
`config_from_checkpoint`, `model_from_checkpoint`), RNG capture, resume compatibility checks.

A checkpoint is `RUN/checkpoints/ckpt-EEEE-SSSSSSS.pt` (E: epoch, S: global step), a dict of
tensors, plain numbers, strings and lists only, so `torch.load(weights_only=True)` reads it.
A live trainer holds `RUN/.lock` (an OS file lock, `claim_run_dir`): a second trainer on the same
run dir is refused, and temporaries that a killed save left behind are deleted at start.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from alexnet_dali.config import TrainConfig, from_dict, to_dict
from alexnet_dali.errors import CheckpointError
from alexnet_dali.model import build_model
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
) -> dict[str, Any]:
    """The checkpoint dict (docs/DESIGN.md): `model` is the grouped net's state dict, `epoch` the
    0-based epoch in progress, `rng` and `loader_checkpoints` one entry per rank, `classes` the
    data's [name, words] per class id (read back by `saved_classes`); `colour_stats` the training
    data's (for predict/export), `source` where imported weights came from, `devices` where rank
    0's network ran (one device, or the two towers of --model-parallel)."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": model, "optimizer": optimizer or {}, "scheduler": scheduler or {},
        "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
        "rng": rng or [], "loader_checkpoints": loader_checkpoints or [],
        "config": to_dict(config), "manifest_sha256": manifest_sha256, "classes": classes,
        "world_size": world_size, "best_top1_err": best_top1_err,
        "colour_stats": colour_stats_record(colour_stats) if colour_stats else None,
        "source": source, "devices": devices or [],
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


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int) -> Path:
    """Write `state` atomically (temp file, fsync, rename, fsync dir); keep the newest `keep`."""
    directory = checkpoint_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ckpt-{state['epoch']:04d}-{state['global_step']:07d}.pt"
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


def capture_rng() -> dict[str, Any]:
    """torch/numpy/python RNG states as tensors and lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", keys, state["numpy_pos"], has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_compatible(
    ckpt: dict[str, Any], *, world_size: int, batch_size: int, manifest_sha256: str | None,
    allow_mismatch: bool,
) -> list[str]:
    """Problems resuming `ckpt` with this world size / batch / dataset; raises unless allowed."""
    problems = []
    if ckpt.get("world_size") != world_size:
        problems.append(f"world size {ckpt.get('world_size')} -> {world_size}")
    if ckpt["config"].get("batch_size") != batch_size:
        problems.append(f"global batch size {ckpt['config'].get('batch_size')} -> {batch_size}")
    if ckpt.get("manifest_sha256") != manifest_sha256:
        problems.append(
            f"dataset manifest sha256 {str(ckpt.get('manifest_sha256'))[:12]} -> "
            f"{str(manifest_sha256)[:12]}"
        )
    if problems and not allow_mismatch:
        raise CheckpointError(
            f"{ckpt.get('path', 'checkpoint')}: cannot resume exactly, the run changed: "
            + "; ".join(problems)
            + ". Restore the original settings, or pass --allow-mismatch to resume anyway "
            "(the data position restarts at the current epoch's beginning)."
        )
    return problems


def saved_classes(state: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The checkpoint's class list, (name, words) per class id (`new_state`'s `classes`); None
    where it records none (synthetic data, or written before class lists were saved)."""
    saved = state.get("classes")
    return [(str(name), str(words)) for name, words in saved] if saved else None


def check_same_classes(state: dict[str, Any], data: str) -> None:
    """Refuse to score a checkpoint on shards with another class list (same ids, same WNIDs)."""
    saved = saved_classes(state)
    if saved is None or data == "synthetic":  # checkpoints from before class lists were saved
        return
    from alexnet_dali.tools.manifest import read_manifest

    mine, theirs = [c.name for c in read_manifest(data).classes], [name for name, _ in saved]
    if mine != theirs:
        i = next((i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b),
                 min(len(mine), len(theirs)))
        there, here = ((names + ["none"])[min(i, len(names))] for names in (theirs, mine))
        raise CheckpointError(f"{state.get('path', 'checkpoint')} was trained on another "
                              f"class list than {data} ({len(theirs)} vs {len(mine)} classes; "
                              f"class id {i} is {there} there, {here} here); evaluate it on "
                              "shards with its classes")


def optimizer_changes(ckpt: dict[str, Any], *, model_parallel: bool, update: str,
                      allow_mismatch: bool, group_sizes: list[int] | None = None) -> list[str]:
    """Settings whose change makes the saved optimizer state unusable; raises unless allowed.

    The split net's parameters (and so its momentum buffers) are laid out per tower, and the
    paper's rule keeps v in other units than torch's SGD: neither state can be loaded across.
    `group_sizes` (parameters per group of this run's optimizer) catches a state saved before
    the optimizer split weights and biases into groups: one group, other buffer order.
    """
    saved = ckpt["config"]
    changes = []
    if bool(saved.get("model_parallel", False)) != model_parallel:
        changes.append(f"model_parallel {saved.get('model_parallel')} -> {model_parallel}")
    if saved.get("optim", {}).get("update", "pytorch") != update:
        changes.append(f"optim.update {saved.get('optim', {}).get('update')} -> {update}")
    saved_sizes = [len(g["params"]) for g in ckpt.get("optimizer", {}).get("param_groups", [])]
    if not changes and group_sizes is not None and saved_sizes != group_sizes:
        changes.append(f"optimizer parameter groups {saved_sizes} -> {group_sizes} (a "
                       "checkpoint from before weight decay and lr were set per group)")
    if changes and not allow_mismatch:
        raise CheckpointError(
            f"{ckpt.get('path', 'checkpoint')}: the optimizer state does not fit this run: "
            + "; ".join(changes)
            + ". Restore the original settings, or pass --allow-mismatch to keep the weights and "
            "restart the optimizer's momentum from zero."
        )
    return changes


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
