"""`export`: the TorchScript / ONNX module equals the eager path predict takes on one input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from alexnet_dali.config.schema import AugmentConfig, ModelConfig, TrainConfig
from alexnet_dali.use.export import ExportError, export_model, run_exported
from alexnet_dali.use.inference import InferenceModel, Normalization, eval_views
from alexnet_dali.model.alexnet import build_model
from alexnet_dali.tools.images import ImageSettings

LOGIT_TOL = 1e-4


@pytest.fixture(scope="module", params=["paper", "owt"])
def inference(request) -> InferenceModel:
    """A random 5-class network with a mean image, a channel mean and a std to fold in."""
    cfg = TrainConfig(model=ModelConfig(arch=request.param, num_classes=5, init="he"),
                      augment=AugmentConfig(mean="image", std_normalize=True))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    norm = Normalization((3.0, -2.0, 1.0), (50.0, 60.0, 70.0),
                         rng.normal(120, 30, size=(256, 256, 3)).astype(np.float32))
    return InferenceModel(build_model(cfg.model).eval(), cfg, norm,
                          tuple(f"class {i}" for i in range(5)), ImageSettings(), "ckpt.pt",
                          tuple(f"n{i:08d}" for i in range(5)))


def _images_and_eager(inference: InferenceModel) -> tuple[torch.Tensor, torch.Tensor]:
    """256×256 uint8 images → their center 224 crops (N×3×224×224 uint8) and the eager logits
    of predict's path (mean image on the 256 image, center view, mean, std)."""
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 256, 256, 3),
                                                                 dtype=np.uint8))
    with torch.no_grad():
        eager = inference.model(eval_views(images, inference.normalization, 224)[:, 0])
    return images[:, 16:240, 16:240].permute(0, 3, 1, 2).contiguous(), eager


def test_torchscript_equals_eager_for_float_and_uint8_input(inference, tmp_path):
    out = tmp_path / "alexnet.pt"
    info = export_model(inference, "torchscript", out)
    crops, eager = _images_and_eager(inference)
    assert (run_exported("torchscript", out, crops.float()) - eager).abs().max() < LOGIT_TOL
    assert (run_exported("torchscript", out, crops) - eager).abs().max() < LOGIT_TOL  # uint8
    written = json.loads((tmp_path / "alexnet.pt.json").read_text())
    assert written == json.loads(json.dumps(info))
    assert written["classes"][4] == {"id": 4, "name": "class 4", "wnid": "n00000004"}
    assert written["input"]["shape"] == ["N", 3, 224, 224] and written["input"]["scale"] == "0-255"
    assert written["normalization_folded_in"]["mean_image_folded"] == "center crop"
    assert written["check"].startswith("max |exported - eager| logit")


@pytest.mark.slow
def test_onnx_equals_eager_with_any_batch_size(inference, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "alexnet.onnx"
    export_model(inference, "onnx", out)
    crops, eager = _images_and_eager(inference)  # 3 images; the export example had 2
    assert (run_exported("onnx", out, crops.float()) - eager).abs().max() < LOGIT_TOL


def test_onnx_without_the_extra_says_what_to_install(inference, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'alexnet-dali\[onnx\]'"):
        export_model(inference, "onnx", tmp_path / "alexnet.onnx")
    assert not (tmp_path / "alexnet.onnx.json").exists()
