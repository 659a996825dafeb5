"""`import-weights torchvision`: torchvision's AlexNet weights as a checkpoint of this project.

torchvision's `AlexNet` (IMAGENET1K_V1, `alexnet-owt-7be5be79.pth`) is the one-weird-trick net that
`model.arch = "owt"` builds, layer for layer: features.{0,3,6,8,10} are conv1-conv5 (each followed
by ReLU; max pools 3/2 after conv1, conv2 and conv5), classifier.{1,4,6} are fc6-fc8 with dropout
on the inputs of fc6 and fc7. Its AdaptiveAvgPool2d((6, 6)) is the identity on the 6×6 maps a
224 input gives, so it has no counterpart. Its inputs are x/255 normalised with mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), i.e. on our 0-255 scale mean 255·m and std
255·s: the checkpoint's config says so with augment.mean_rgb / std_rgb.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from alexnet_dali.model.checkpoint import latest_checkpoint, new_state, save_checkpoint
from alexnet_dali.config.schema import AugmentConfig, ModelConfig, TrainConfig
from alexnet_dali.errors import CheckpointError

# torchvision key prefix → our layer name
TORCHVISION_LAYERS = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
    "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8",
}
TORCHVISION_MEAN = (0.485, 0.456, 0.406)  # of x/255
TORCHVISION_STD = (0.229, 0.224, 0.225)
PUBLISHED = {"acc@1": 56.522, "acc@5": 79.066}  # torchvision's IMAGENET1K_V1, center 224 of 256


def torchvision_augment() -> AugmentConfig:
    """torchvision's input normalisation on the 0-255 scale (mean 255·m, std 255·s)."""
    return AugmentConfig(mean="channel", mean_rgb=tuple(255.0 * m for m in TORCHVISION_MEAN),
                         std_normalize=True, std_rgb=tuple(255.0 * s for s in TORCHVISION_STD))


def convert_torchvision(state_dict: dict[str, torch.Tensor], source: str = "state dict",
                        ) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """torchvision AlexNet keys (`features.0.weight` … `classifier.6.bias`) → ours (`conv1.weight`
    … `fc8.bias`) and the `owt` ModelConfig (classes from classifier.6's rows)."""
    expected = {f"{prefix}.{kind}" for prefix in TORCHVISION_LAYERS for kind in ("weight", "bias")}
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: not torchvision's AlexNet state dict (missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}); pass the alexnet-owt-*.pth file torchvision downloads")
    converted = {}
    for key, tensor in state_dict.items():
        prefix, kind = key.rsplit(".", 1)
        converted[f"{TORCHVISION_LAYERS[prefix]}.{kind}"] = tensor.detach().to(torch.float32)
    classes = int(converted["fc8.weight"].shape[0])
    return converted, ModelConfig(arch="owt", num_classes=classes, towers=1, lrn=False)


def read_torchvision_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision .pth (a plain state dict), read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; pass the downloaded alexnet-owt-*.pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointError(f"{path}: not a readable PyTorch file ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file (torchvision's names carry its first 8 digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_torchvision(path: str | Path, run_dir: str | Path,
                       classes: list[list[str]] | None = None) -> Path:
    """Write RUN/checkpoints/ckpt-0000-0000000.pt from torchvision's AlexNet file; its path.

    `classes` ([name, words] per class id, e.g. from ImageNet shards' manifest) go into the
    checkpoint so predict/eval print names; without them the names are the ids.
    """
    existing = latest_checkpoint(run_dir)
    if existing is not None:
        raise CheckpointError(f"{run_dir}: already holds {existing.name}; choose another --out")
    weights, model_cfg = convert_torchvision(read_torchvision_file(path), str(path))
    if classes is not None and len(classes) != model_cfg.num_classes:
        raise CheckpointError(f"{path}: {model_cfg.num_classes} classes, but the class list has "
                              f"{len(classes)}; pass shards with the same classes")
    cfg = TrainConfig(run_dir=str(run_dir), model=model_cfg, augment=torchvision_augment())
    source = {"kind": "torchvision", "file": Path(path).name, "sha256": sha256_of(path)}
    state = new_state(model=weights, config=cfg, epoch=0, global_step=0, classes=classes,
                      source=source)
    return save_checkpoint(run_dir, state, keep=1)
