"""The two-device split net equals the grouped net: outputs, fc7 features and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet_dali.config.schema import ModelConfig
from alexnet_dali.errors import ConfigError
from alexnet_dali.model.alexnet import TowerLRN, build_model, count_parameters
from alexnet_dali.model.parallel import (ModelParallelAlexNet, merge_state_dict,
                                         split_state_dict)

CFG = ModelConfig(num_classes=11, dropout=0.0)  # odd class count: fc8 splits 6 + 5


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().cpu() for n, p in model.named_parameters()}


def check_split_equals_grouped(devices: tuple[str, str], train: bool) -> None:
    torch.manual_seed(0)
    grouped = build_model(CFG).train(train)
    split = ModelParallelAlexNet(CFG, devices=devices).train(train)
    split.load_state_dict(grouped.state_dict())
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 5, 10])

    out_g, out_s = grouped(x), split(x)
    assert out_s.device == torch.device(devices[0])
    torch.testing.assert_close(out_s.cpu(), out_g, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(split.features(x).cpu(), grouped.features(x), rtol=1e-4, atol=1e-4)

    nn.functional.cross_entropy(out_g, y).backward()
    nn.functional.cross_entropy(out_s, y.to(out_s.device)).backward()
    merged = merge_state_dict(grads(split))
    expected = grads(grouped)
    assert merged.keys() == expected.keys()
    for name, g in expected.items():
        scale = g.abs().max().item() + 1e-12
        torch.testing.assert_close(merged[name] / scale, g / scale, rtol=0, atol=1e-4, msg=name)


@pytest.mark.slow
def test_split_equals_grouped_on_cpu() -> None:
    check_split_equals_grouped(("cpu", "cpu"), train=True)  # dropout 0: train mode is deterministic


@pytest.mark.gpu
def test_split_equals_grouped_across_cpu_and_gpu() -> None:
    check_split_equals_grouped(("cpu", "cuda:0"), train=True)


@pytest.mark.slow
def test_state_dict_round_trips_in_the_grouped_layout() -> None:
    torch.manual_seed(4)
    grouped_sd = build_model(CFG).state_dict()
    torch.manual_seed(4)
    split = ModelParallelAlexNet(CFG, devices=("cpu", "cpu"))
    sd = split.state_dict()
    # Same seed, same weights as build_model; the grouped names and shapes.
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in grouped_sd.items()}
    assert all(torch.equal(sd[k], grouped_sd[k]) for k in sd)
    assert sum(p.numel() for p in split.parameters()) == count_parameters(build_model(CFG))["total"]
    back = build_model(CFG)
    back.load_state_dict(sd)  # split -> grouped
    assert all(torch.equal(v, grouped_sd[k]) for k, v in back.state_dict().items())
    assert merge_state_dict(split_state_dict(grouped_sd)).keys() == grouped_sd.keys()
    assert split.conv2[1].weight.shape == (128, 48, 5, 5)
    assert torch.equal(split.conv2[1].weight, grouped_sd["conv2.weight"][128:])


def test_split_rejects_single_tower_configs() -> None:
    with pytest.raises(ConfigError, match="towers=2"):
        ModelParallelAlexNet(ModelConfig(towers=1), devices=("cpu", "cpu"))


def test_split_halves_a_narrower_fc_width_and_refuses_an_odd_one() -> None:
    cfg = ModelConfig(num_classes=5, fc_width=64)
    split = ModelParallelAlexNet(cfg, devices=("cpu", "cpu"))
    assert [tuple(t.weight.shape) for t in split.fc7] == [(32, 64), (32, 64)]
    assert {k: v.shape for k, v in split.state_dict().items()} == {
        k: v.shape for k, v in build_model(cfg).state_dict().items()}
    with pytest.raises(ConfigError, match="model.fc_width = 63: .*use an even width"):
        ModelParallelAlexNet(ModelConfig(fc_width=63), devices=("cpu", "cpu"))


@pytest.mark.parametrize("formula", ["code", "text"])
def test_split_lrn_uses_the_configured_formula_per_tower(formula: str) -> None:
    cfg = ModelConfig(num_classes=11, lrn_formula=formula)
    split = ModelParallelAlexNet(cfg, devices=("cpu", "cpu"))
    a = 60 * torch.rand(2, 96, 3, 3, generator=torch.Generator().manual_seed(0))
    per_device = torch.cat([split.norm(a[:, :48]), split.norm(a[:, 48:])], dim=1)
    # The grouped net's norm1 (tested against NumPy in test_model.py) on both towers at once.
    torch.testing.assert_close(per_device, TowerLRN(2, formula=formula)(a), rtol=1e-6, atol=0)
    assert split.norm.formula == formula
