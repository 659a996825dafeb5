"""What resuming a run restores besides the weights (every RNG), and whether a checkpoint fits
the run that resumes it (world size, batch, dataset; the optimizer state's layout)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from alexnet_dali.errors import CheckpointError


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
