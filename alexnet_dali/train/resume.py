"""What resuming a run restores besides the weights (every RNG), and whether a checkpoint fits
the run that resumes it (world size, batch, dataset; the optimizer state's layout; the network,
which a resume never changes) and which other settings the resume changes."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import torch

from alexnet_dali.config.resolve import to_dict
from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.errors import CheckpointError

# Settings that make another network (or feed it another input size): fixed by the checkpoint.
NETWORK_SECTIONS = ("model",)
NETWORK_KEYS = ("augment.crop",)


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


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _changes(ckpt: dict[str, Any], cfg: TrainConfig) -> list[tuple[str, Any, Any]]:
    """(key, recorded value, this run's value) for every setting that differs."""
    recorded, now = _flat(ckpt["config"]), _flat(to_dict(cfg))
    return [(key, recorded[key], now[key]) for key in now
            if key in recorded and recorded[key] != now[key]]


def _shown(value: Any) -> str:
    """A config value as TOML and --set spell it (true, "owt", [30, 60])."""
    return json.dumps(value)


def _is_network(key: str) -> bool:
    return key.split(".")[0] in NETWORK_SECTIONS or key in NETWORK_KEYS


def check_same_network(ckpt: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse a resume whose settings change the network (any model.* key, augment.crop)."""
    changed = [(k, old, new) for k, old, new in _changes(ckpt, cfg) if _is_network(k)]
    if changed:
        raise CheckpointError(
            f"{ckpt.get('path', 'checkpoint')}: --resume cannot change the network: "
            + "; ".join(f"{k} = {_shown(new)} asked, the checkpoint was trained with {k} = "
                        f"{_shown(old)}"
                        for k, old, new in changed)
            + ". Drop the setting to continue that run, or train the other network from the "
            "start in another --run-dir")


def changed_settings(ckpt: dict[str, Any], cfg: TrainConfig) -> str:
    """The one line a resume prints about the other settings it changes (lr, epochs, ...)."""
    changed = [(k, old, new) for k, old, new in _changes(ckpt, cfg) if not _is_network(k)]
    if not changed:
        return ""
    return "resuming with changed settings: " + "; ".join(
        f"{k} {_shown(old)} -> {_shown(new)}" for k, old, new in changed)
