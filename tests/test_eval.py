"""Evaluation: ten-crop averaging and padding on a hand-checkable case; `eval` on 1 and 2 ranks."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from alexnet_dali.model.checkpoint import new_state, save_checkpoint
from alexnet_dali.config.schema import ModelConfig, TrainConfig
from alexnet_dali.train.validate import evaluate
from alexnet_dali.model.alexnet import build_model


class _LogitsInPixels(torch.nn.Module):
    """Returns the first C pixels of channel 0, row 0 as the logits (N×3×1×C → N×C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, :]


def test_tencrop_averages_softmax_and_drops_padding():
    big = 20.0  # softmax(one-hot * big) is a one-hot up to e^-20
    # sample 0, label 2: 6 views vote class 2, 4 views vote class 0 -> mean prob class 2 wins
    # sample 1, label 1: every view ranks classes 0>5>4>3>2>1 -> label is 6th: top-1 and top-5 miss
    # sample 2, label 4: every view ranks 3>4 -> top-1 miss, top-5 hit
    # sample 3: padding (valid False) that would be a top-1 hit
    views = torch.zeros(4, 10, 3, 1, 6)
    views[0, :6, 0, 0, 2] = big
    views[0, 6:, 0, 0, 0] = big
    views[1, :, 0, 0] = torch.tensor([6.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    views[2, :, 0, 0, 3], views[2, :, 0, 0, 4] = 2.0, 1.0
    views[3, :, 0, 0, 5] = big
    labels = torch.tensor([2, 1, 4, 5])
    valid = torch.tensor([True, True, True, False])
    loader = [(views[:2], labels[:2], valid[:2]), (views[2:], labels[2:], valid[2:])]
    result = evaluate(_LogitsInPixels(), loader, device=torch.device("cpu"), tencrop=True)
    assert result["samples"] == 3
    assert result["top1_err"] == pytest.approx(2 / 3) and result["top5_err"] == pytest.approx(1 / 3)
    assert result["top1_acc"] == pytest.approx(1 / 3) and result["top5_acc"] == pytest.approx(2 / 3)
    p1 = torch.softmax(torch.tensor([6.0, 1, 2, 3, 4, 5]), 0)[1]
    p2 = torch.softmax(torch.tensor([0.0, 0, 0, 2, 1, 0]), 0)[4]
    expected_loss = -(math.log(0.6) + math.log(p1) + math.log(p2)) / 3
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-4)


@pytest.mark.slow
def test_eval_cli_counts_every_val_sample_once_on_one_and_two_ranks(shard_dataset, tmp_path):
    cfg = TrainConfig(data=str(shard_dataset), model=ModelConfig(num_classes=4, init="he"))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    save_checkpoint(tmp_path, new_state(model=model.state_dict(), config=cfg, epoch=1,
                                        global_step=3), keep=1)
    val_samples = json.loads((shard_dataset / "manifest.json").read_text())["splits"]["val"]
    results = {}
    for ranks in (1, 2):
        out = tmp_path / f"eval{ranks}.json"
        launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", "2", "-m"] if ranks == 2 else [sys.executable, "-m"])
        cmd = [*launch, "alexnet_dali.cli", "eval", str(shard_dataset), "--checkpoint",
               str(tmp_path), "--device", "cpu", "--batch-size", "6", "--json", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "top-1 err" in done.stdout
        results[ranks] = json.loads(out.read_text())
    for ranks, result in results.items():
        assert result["samples"] == val_samples["samples"], f"{ranks} rank(s)"
        assert result["world_size"] == ranks and result["views"] == 1
    assert results[1]["top1_err"] == pytest.approx(results[2]["top1_err"])
    assert results[1]["loss"] == pytest.approx(results[2]["loss"], rel=1e-5)


def test_eval_refuses_a_checkpoint_trained_on_another_class_list(shard_dataset, tmp_path):
    from click.testing import CliRunner

    from alexnet_dali.loader.data import class_list
    from alexnet_dali.cli import main

    cfg = TrainConfig(data=str(shard_dataset), model=ModelConfig(num_classes=4, init="he"))
    classes = class_list(str(shard_dataset))
    assert [name for name, _ in classes] == ["n00000000", "n00000001", "n00000002", "n00000003"]
    other = [classes[0], ["n09999999", "elsewhere"], *classes[2:]]
    save_checkpoint(tmp_path, new_state(model=build_model(cfg.model).state_dict(), config=cfg,
                                        epoch=1, global_step=3, classes=other), keep=1)
    result = CliRunner().invoke(main, ["eval", str(shard_dataset), "--checkpoint", str(tmp_path),
                                       "--device", "cpu"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "was trained on another class list" in result.output
    assert "class id 1 is n09999999 there, n00000001 here" in result.output
