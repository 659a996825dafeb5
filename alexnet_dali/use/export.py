"""`export`: a checkpoint as a self-contained TorchScript or ONNX module, normalisation inside.

Input: RGB images N×3×224×224 on the 0-255 scale, float32 (TorchScript also takes uint8): the
center 224 crop of the 256×256 image preprocess makes (shorter side 256, central square).
Output: logits N×num_classes (softmax them for probabilities). The training normalisation is
folded in as `(x − offset) / std`; with augment.mean = "image" the offset is the mean image's
center 224 crop plus nothing else, which is exact for the center view only.
OUT.json beside the module records the class ids and names and this input contract.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet_dali.errors import UserError
from alexnet_dali.use.inference import InferenceModel, Normalization

FORMATS = ("torchscript", "onnx")
INPUT_CONTRACT = ("float32 (TorchScript: uint8 too) RGB images N×3×224×224, NCHW, pixel values "
                  "on the 0-255 scale: the center 224 crop of the image resized to shorter side "
                  "256 and center-cropped to 256×256 (as `alexnet-dali preprocess` does)")


class ExportError(UserError):
    """An export that cannot be made here (a missing optional package, an unknown format)."""


class NormalizedAlexNet(nn.Module):
    """Images N×3×crop×crop (0-255, any real dtype) → logits N×C float32: (x − offset) / std."""

    def __init__(self, model: nn.Module, norm: Normalization, crop: int) -> None:
        super().__init__()
        self.model = model.eval()
        offset = torch.tensor(norm.mean, dtype=torch.float32).view(1, 3, 1, 1)
        if norm.mean_image is not None:
            side = norm.mean_image.shape[0]
            start = (side - crop) // 2  # the center view's anchor, as in pipelines/eval.py
            image = torch.from_numpy(norm.mean_image[start:start + crop, start:start + crop])
            offset = offset + image.permute(2, 0, 1).unsqueeze(0)
        self.register_buffer("offset", offset.contiguous())
        self.register_buffer("std", torch.tensor(norm.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(torch.float32) - self.offset) / self.std
        return self.model(x).float()


def export_info(inference: InferenceModel, fmt: str, out: Path) -> dict[str, Any]:
    """What OUT.json records: the input contract, the normalisation folded in, the classes."""
    crop = inference.cfg.augment.crop
    return {
        "format": fmt, "module": out.name, "checkpoint": inference.path,
        "arch": inference.cfg.model.arch,
        "input": {"name": "images", "shape": ["N", 3, crop, crop], "layout": "NCHW RGB",
                  "dtype": "float32" if fmt == "onnx" else "float32 or uint8",
                  "scale": "0-255", "contract": INPUT_CONTRACT.replace("224", str(crop))},
        "output": {"name": "logits", "shape": ["N", inference.cfg.model.num_classes],
                   "dtype": "float32", "note": "logits; softmax them for probabilities"},
        "normalization_folded_in": {
            **inference.normalization.describe(),
            "mean_image_folded": "center crop" if inference.normalization.mean_image is not None
            else None},
        "classes": [{"id": i, "name": name, "wnid": wnid} for i, (name, wnid) in
                    enumerate(zip(inference.classes, inference.wnids or
                                  (None,) * len(inference.classes)))],
    }


def export_model(inference: InferenceModel, fmt: str, out: str | Path,
                 check: bool = True) -> dict[str, Any]:
    """Write the module to OUT and OUT.json; with `check`, compare it with the eager model."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    crop = inference.cfg.augment.crop
    module = NormalizedAlexNet(inference.model, inference.normalization, crop).eval()
    example = torch.randint(0, 256, (2, 3, crop, crop)).float()
    if fmt == "torchscript":
        with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit; libtorch still loads it
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.script(module), str(out))
    else:
        _export_onnx(module, example, out)
    info = export_info(inference, fmt, out)
    if check:
        info["check"] = check_export(module, fmt, out, example)
    Path(f"{out}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _export_onnx(module: nn.Module, example: torch.Tensor, out: Path) -> None:
    try:
        import onnx  # noqa: F401 - the exporter needs it; say so before it fails deep inside
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install 'alexnet-dali[onnx]' "
                          "(or use --format torchscript)") from None
    batch = torch.export.Dim("batch", min=1)
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it warns about torchvision ops this model does not use
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(module, (example,), input_names=["images"],
                                        output_names=["logits"], verbose=False, dynamo=True,
                                        dynamic_shapes={"images": {0: batch}})
    finally:
        logger.setLevel(level)
    program.save(str(out))


def run_exported(fmt: str, path: str | Path, images: torch.Tensor) -> torch.Tensor:
    """Logits of the exported module at `path` (ONNX through onnxruntime) for float32 images."""
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path)).eval()(images)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])


def check_export(module: nn.Module, fmt: str, out: Path, example: torch.Tensor) -> str:
    """Max |exported − eager| logit on `example`, or why it could not be checked."""
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "not checked: onnxruntime is not installed"
    with torch.no_grad():
        eager = module(example)
    diff = (run_exported(fmt, out, example) - eager).abs().max().item()
    return f"max |exported - eager| logit on 2 random images: {diff:.3g}"
