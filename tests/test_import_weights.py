"""torchvision AlexNet weights → our `owt` checkpoint, against a reference forward of torchvision's
network written here with plain torch.nn.functional ops (its layer order, on x/255 normalised)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from alexnet_dali.errors import CheckpointError
from alexnet_dali.cli import main
from alexnet_dali.model.torchvision import import_torchvision
from alexnet_dali.use.inference import eval_views, load_for_inference

# torchvision's AlexNet state dict: key -> shape (1000 classes there; fewer here)
CONVS = {"features.0": (64, 3, 11), "features.3": (192, 64, 5), "features.6": (384, 192, 3),
         "features.8": (256, 384, 3), "features.10": (256, 256, 3)}


def torchvision_state_dict(classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in torchvision's exact key layout (scaled so activations stay O(1))."""
    g = torch.Generator().manual_seed(seed)
    shapes = {f"{k}.weight": (o, i, s, s) for k, (o, i, s) in CONVS.items()}
    shapes |= {"classifier.1.weight": (4096, 9216), "classifier.4.weight": (4096, 4096),
               "classifier.6.weight": (classes, 4096)}
    state = {}
    for key, shape in shapes.items():
        fan_in = torch.Size(shape[1:]).numel()
        state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        state[key.replace("weight", "bias")] = torch.randn(shape[0], generator=g) * 0.1
    return state


def torchvision_forward(sd: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """torchvision's AlexNet in eval mode on N×3×224×224 images in 0-255 (its transform included:
    /255, then mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225))."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (images / 255.0 - mean) / std
    for key, stride, pad, pool in (("features.0", 4, 2, True), ("features.3", 1, 2, True),
                                   ("features.6", 1, 1, False), ("features.8", 1, 1, False),
                                   ("features.10", 1, 1, True)):
        x = F.relu(F.conv2d(x, sd[f"{key}.weight"], sd[f"{key}.bias"], stride, pad))
        if pool:
            x = F.max_pool2d(x, 3, 2)
    x = torch.flatten(F.adaptive_avg_pool2d(x, (6, 6)), 1)  # dropout: identity in eval mode
    x = F.relu(F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"]))
    x = F.relu(F.linear(x, sd["classifier.4.weight"], sd["classifier.4.bias"]))
    return F.linear(x, sd["classifier.6.weight"], sd["classifier.6.bias"])


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "alexnet-owt-test.pth"
    torch.save(torchvision_state_dict(classes=4), path)
    yield path
    shutil.rmtree(path.parent)  # 0.24 GB: not kept for the rest of the session


def test_imported_weights_give_torchvisions_logits(torchvision_file, tmp_path):
    ckpt = import_torchvision(torchvision_file, tmp_path / "run")
    inference = load_for_inference(ckpt)
    assert inference.cfg.model.arch == "owt" and inference.cfg.model.num_classes == 4
    assert inference.classes == ("0", "1", "2", "3")  # no class list given: the ids
    images = torch.randint(0, 256, (3, 256, 256, 3), dtype=torch.uint8)
    with torch.no_grad():
        ours = inference.model(eval_views(images, inference.normalization, 224)[:, 0])
        crops = images[:, 16:240, 16:240].permute(0, 3, 1, 2).float()
        reference = torchvision_forward(torch.load(torchvision_file), crops)
    assert reference.abs().max() > 1.0  # the check is not on vanishing logits
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_owt_has_torchvisions_parameter_count():
    from alexnet_dali.config.schema import ModelConfig
    from alexnet_dali.model.alexnet import build_model, count_parameters

    owt = build_model(ModelConfig(arch="owt", num_classes=1000))
    assert count_parameters(owt)["total"] == 61_100_840  # torchvision's IMAGENET1K_V1 num_params
    shapes = {k: tuple(v.shape) for k, v in torchvision_state_dict(classes=1000).items()}
    assert sorted(shapes.values()) == sorted(tuple(v.shape) for v in owt.state_dict().values())


def test_import_refuses_other_files_and_a_used_run_dir(torchvision_file, tmp_path):
    wrong = tmp_path / "wrong.pth"
    sd = torchvision_state_dict(classes=4)
    sd["features.1.weight"] = sd.pop("features.0.weight")
    torch.save(sd, wrong)
    with pytest.raises(CheckpointError, match="missing \\['features.0.weight'\\]"):
        import_torchvision(wrong, tmp_path / "a")
    import_torchvision(torchvision_file, tmp_path / "b")
    with pytest.raises(CheckpointError, match="already holds ckpt-0000-0000000.pt"):
        import_torchvision(torchvision_file, tmp_path / "b")


@pytest.mark.slow
def test_cli_import_then_eval_and_predict_without_pca_json(torchvision_file, shard_dataset,
                                                           raw_dataset, tmp_path):
    # torchvision's normalisation is explicit: eval needs no pca.json (and no train split)
    shards = tmp_path / "val-only"
    shutil.copytree(shard_dataset / "val", shards / "val")
    manifest = json.loads((shard_dataset / "manifest.json").read_text())
    words = {0: "tench, Tinca tinca", 2: "goldfish, Carassius auratus",  # class 3 has none
             1: "great white shark, white shark, man-eater, man-eating shark, Carcharodon "
                "carcharias"}  # printed whole by eval --per-class
    for c in manifest["classes"]:
        c["words"] = words.get(c["id"], "")
    (shards / "manifest.json").write_text(json.dumps(manifest))
    names = [words.get(i, f"n{i:08d}") for i in range(4)]  # words where they exist
    runner = CliRunner()
    run = tmp_path / "tv"
    done = runner.invoke(main, ["import-weights", "torchvision", str(torchvision_file),
                                "--out", str(run), "--data", str(shards)])
    assert done.exit_code == 0, done.output
    out = tmp_path / "eval.json"
    ev = runner.invoke(main, ["eval", str(shards), "--checkpoint", str(run), "--device", "cpu",
                              "--per-class", "--json", str(out), "--batch-size", "16"])
    assert ev.exit_code == 0, ev.output
    result = json.loads(out.read_text())
    rows = result["per_class"]
    assert sorted(r["class"] for r in rows) == sorted(names)
    assert [r["top1_acc"] for r in rows] == sorted(r["top1_acc"] for r in rows)  # worst first
    assert sum(r["samples"] for r in rows) == result["samples"] == 32
    hits = sum(round(r["top1_acc"] * r["samples"]) for r in rows)
    assert hits / 32 == pytest.approx(result["top1_acc"])
    assert all(name in ev.output for name in names)
    photo = sorted((raw_dataset / "val").glob("*/*"))[0]
    preds = tmp_path / "preds.json"
    pred = runner.invoke(main, ["predict", str(photo), "--checkpoint", str(run), "--device", "cpu",
                                "--topk", "4", "--json", str(preds)])
    assert pred.exit_code == 0, pred.output
    top = json.loads(preds.read_text())[0]["top"]
    assert [names[t["class_id"]] for t in top] == [t["class"] for t in top]
    assert [t["wnid"] for t in top] == [f"n{t['class_id']:08d}" for t in top]
    assert "tench, Tinca tinca" in pred.output
