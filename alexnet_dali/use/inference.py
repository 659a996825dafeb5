"""What `predict` and `export` share: a checkpoint's network, input normalisation and class names,
and the eval views (center crop, or pipelines/eval.py's ten views) computed in torch.

The normalisation is the eval pipeline's, on the 0-255 scale: subtract the 256×256 mean image
(augment.mean = "image"), take the view, subtract the per-channel mean (augment.mean = "channel"),
divide by the per-channel std (augment.std_normalize). Its numbers come from the checkpoint's
config (explicit augment.mean_rgb / std_rgb), else the colour statistics the checkpoint recorded
from its training data, else that data's pca.json (checkpoints written before they were recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet_dali.model.checkpoint import (
    check_image_size,
    load_checkpoint,
    model_from_checkpoint,
    recorded_colour_stats,
    saved_classes,
)
from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.errors import CheckpointError
from alexnet_dali.pipelines.eval import TENCROP_VIEWS, view_anchor
from alexnet_dali.pipelines.recipe import Recipe, needs_colour_stats
from alexnet_dali.tools.images import ImageSettings
from alexnet_dali.tools.manifest import MANIFEST_NAME, Manifest, read_manifest
from alexnet_dali.tools.pca import PCA_NAME, ColourStats, load_colour_stats
from alexnet_dali.tools.storage import open_store


@dataclass(frozen=True)
class Normalization:
    """(x − mean_image − mean) / std per pixel, x on the 0-255 scale (RGB)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    mean_image: np.ndarray | None = field(default=None, compare=False, repr=False)  # HWC f32

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (the mean image by its shape only)."""
        image = None if self.mean_image is None else list(self.mean_image.shape)
        return {"scale": "0-255", "mean_rgb": list(self.mean), "std_rgb": list(self.std),
                "mean_image_hwc": image}


@dataclass(frozen=True)
class InferenceModel:
    """A checkpoint ready for inference: the network (CPU, eval mode) and what it expects."""

    model: torch.nn.Module
    cfg: TrainConfig
    normalization: Normalization
    classes: tuple[str, ...]  # display names: the words, else the WNID (or folder name)
    image_settings: ImageSettings
    path: str
    wnids: tuple[str | None, ...] = ()  # each class's WNID (folder name); None where unknown


def _training_stats(state: dict[str, Any], cfg: TrainConfig, data: str | None,
                    manifest: Manifest | None) -> ColourStats:
    """The colour statistics recorded in the checkpoint, else DATA's (or the config's) pca.json
    (`manifest`: that folder's, if read already)."""
    recorded = recorded_colour_stats(state)
    need_image = cfg.augment.mean == "image"
    if recorded is not None and (recorded.mean_image is not None or not need_image):
        return recorded
    source = data or cfg.data
    if not source or open_store(source).size(PCA_NAME) is None:
        raise CheckpointError(
            f"{state.get('path', 'checkpoint')}: records no colour statistics and "
            f"{source or 'its data dir'!r} has no pca.json; pass --data SHARDS, the shard folder "
            "it was trained on")
    return load_colour_stats(source, need_mean_image=need_image, manifest=manifest)


def normalization_of(state: dict[str, Any], cfg: TrainConfig, data: str | None = None,
                     manifest: Manifest | None = None) -> Normalization:
    """The eval normalisation a checkpoint was trained with (see the module docstring)."""
    stats = (_training_stats(state, cfg, data, manifest)
             if needs_colour_stats(cfg.augment, training=False) else None)
    recipe = Recipe.of(cfg.augment, stats, training=False)
    return Normalization(tuple(recipe.mean), tuple(recipe.std), recipe.mean_image)


def optional_manifest(cfg: TrainConfig, data: str | None = None) -> Manifest | None:
    """DATA's (else the training data's) manifest, if it is there."""
    store = open_store(data or cfg.data or ".")
    return read_manifest(store) if store.size(MANIFEST_NAME) is not None else None


def display_name(name: str, words: str = "") -> str:
    """What predict and eval print for a class: its words (ImageNet's "tench, Tinca tinca"),
    else its name (WNID or folder)."""
    return words or name


def class_entries(state: dict[str, Any], cfg: TrainConfig,
                  manifest: Manifest | None = None) -> list[tuple[str, str]] | None:
    """(name, words) per class id: the checkpoint's, else the shard `manifest`'s; None if
    neither has one per class."""
    entries = saved_classes(state)
    if not entries:
        entries = [(c.name, c.words) for c in manifest.classes] if manifest else []
    return entries if len(entries) == cfg.model.num_classes else None


def class_names(state: dict[str, Any], cfg: TrainConfig,
                manifest: Manifest | None = None) -> list[str]:
    """One name per class id: the checkpoint's, else the shard `manifest`'s, else the ids."""
    entries = class_entries(state, cfg, manifest)
    if entries is None:
        return [str(i) for i in range(cfg.model.num_classes)]
    return [display_name(*c) for c in entries]


def image_settings_of(manifest: Manifest | None) -> ImageSettings:
    """The conversion the shards were made with (the manifest's settings), else preprocess's
    default; settings ImageSettings does not have (seed, shard size, ...) are ignored."""
    if manifest is None:
        return ImageSettings()
    known = {f.name for f in fields(ImageSettings)}
    # shards written before the decoder was recorded were all Pillow's
    given = {"decoder": "pillow", **{k: v for k, v in manifest.settings.items() if k in known}}
    return ImageSettings(**given)


def load_for_inference(checkpoint: str | Path, data: str | None = None) -> InferenceModel:
    """Checkpoint file or run dir → the network, its normalisation, class names and the image
    conversion (from DATA's manifest, else the training data's if still there, else defaults)."""
    state = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(state)
    manifest = optional_manifest(cfg, data)  # read once
    settings = image_settings_of(manifest)
    where = str(data or cfg.data).rstrip("/")  # a folder or an s3:// prefix
    check_image_size(state, settings.size, f"{where}/{MANIFEST_NAME}")
    entries = class_entries(state, cfg, manifest)
    wnids = tuple(n for n, _ in entries) if entries else (None,) * cfg.model.num_classes
    return InferenceModel(model, cfg, normalization_of(state, cfg, data, manifest),
                          tuple(class_names(state, cfg, manifest)), settings, state["path"],
                          wnids)


def eval_views(images: torch.Tensor, norm: Normalization, crop: int,
               tencrop: bool = False) -> torch.Tensor:
    """Images N×S×S×3 uint8 (RGB) → normalised views N×V×3×crop×crop float32, V = 1 or 10.

    The views and their order are pipelines/eval.py's: the center crop at span // 2, or
    TENCROP_VIEWS (mirrored views are the crop mirrored in place, after the mean image).
    """
    x = images.to(torch.float32)
    if norm.mean_image is not None:
        x = x - torch.from_numpy(norm.mean_image)
    x = x.permute(0, 3, 1, 2)  # NCHW
    span = x.shape[-1] - crop
    if span < 0 or x.shape[-2] != x.shape[-1]:
        raise ValueError(f"eval_views: need square images of side >= {crop}, got {tuple(x.shape)}")
    anchors = ([view_anchor(v, span) + (m,) for v, (_, _, _, m) in enumerate(TENCROP_VIEWS)]
               if tencrop else [(span // 2, span // 2, False)])
    views = []
    for ax, ay, mirrored in anchors:
        view = x[:, :, ay:ay + crop, ax:ax + crop]
        views.append(view.flip(-1) if mirrored else view)
    out = torch.stack(views, dim=1)
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, 1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, 1, 3, 1, 1)
    return ((out - mean) / std).contiguous()
