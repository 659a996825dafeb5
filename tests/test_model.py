"""Fidelity of the network to the paper: sizes, parameter count, LRN, init, dropout, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from alexnet_dali.config.resolve import resolve_config
from alexnet_dali.config.schema import ModelConfig
from alexnet_dali.errors import ConfigError
from alexnet_dali.model.alexnet import TowerLRN, build_model, count_parameters

PAPER_COUNTS = {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936,
                "conv5": 442_624, "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000,
                "total": 60_965_224}
SHAPE_LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")


@pytest.fixture(scope="module")
def paper() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig()).eval()


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def capture(model: nn.Module, names: tuple[str, ...], x: torch.Tensor) -> dict:
    """Run `model(x)`; return {name: (input, output)} of the named submodules."""
    seen: dict = {}
    hooks = [getattr(model, n).register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, (i[0].detach(), o.detach()))) for n in names]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_parameter_count_is_the_papers(paper: nn.Module) -> None:
    assert count_parameters(paper) == PAPER_COUNTS


def test_owt_matches_torchvision_parameter_count() -> None:
    assert count_parameters(build_model(ModelConfig(arch="owt")))["total"] == 61_100_840


@pytest.mark.parametrize("overrides", [{}, {"overlap_pool": False}, {"towers": 1, "lrn": False},
                                       {"arch": "owt"}])
def test_every_layer_output_shape(paper: nn.Module, overrides: dict) -> None:
    model = paper if not overrides else build_model(ModelConfig(num_classes=10, **overrides))
    seen = capture(model.eval(), SHAPE_LAYERS, images())
    sides = [seen[n][1].shape[-1] for n in SHAPE_LAYERS]
    assert sides == [55, 27, 27, 13, 13, 13, 13, 6]
    if "arch" not in overrides:
        assert [seen[n][1].shape[1] for n in SHAPE_LAYERS] == [96, 96, 256, 256, 384, 384, 256, 256]
    assert model.features(images()).shape == (2, 4096)


def test_fc_width_sets_fc6_and_fc7_and_leaves_the_conv_layers() -> None:
    narrow = build_model(ModelConfig(num_classes=4, fc_width=64))
    shapes = {n: tuple(getattr(narrow, n).weight.shape) for n in ("fc6", "fc7", "fc8")}
    assert shapes == {"fc6": (64, 9216), "fc7": (64, 64), "fc8": (4, 64)}
    counts = count_parameters(narrow)
    assert {k: counts[k] for k in ("conv1", "conv2", "conv3", "conv4", "conv5")} == {
        k: PAPER_COUNTS[k] for k in ("conv1", "conv2", "conv3", "conv4", "conv5")}
    assert narrow.features(images()).shape == (2, 64)


def lrn_numpy(a: np.ndarray, tower_channels: int, formula: str, k=2.0, n=5, alpha=1e-4,
              beta=0.75) -> np.ndarray:
    """LRN by loops, summing over the window's channels of the same tower only.

    "text": b_i = a_i / (k + α Σ a_j²)^β (the paper's formula as printed); "code": α/n in place
    of α (cuda-convnet divides its `scale` by the window size). a: N×C×H×W float64.
    """
    scale = alpha / n if formula == "code" else alpha
    out = np.empty_like(a)
    for i in range(a.shape[1]):
        first = i // tower_channels * tower_channels  # this tower's first channel
        total = np.zeros_like(a[:, i])
        for j in range(i - n // 2, i + n // 2 + 1):
            if first <= j < first + tower_channels:
                total += a[:, j] ** 2
        out[:, i] = a[:, i] / (k + scale * total) ** beta
    return out


@pytest.mark.parametrize("formula", ["code", "text"])
@pytest.mark.parametrize("channels,towers", [(96, 2), (256, 2), (10, 1)])
def test_tower_lrn_matches_each_formula(channels: int, towers: int, formula: str) -> None:
    # Large activations so that the α term matters (≈ 3600 · 1e-4 · 5 vs k = 2).
    a = 60 * torch.rand(2, channels, 3, 3, generator=torch.Generator().manual_seed(1))
    expected = lrn_numpy(a.double().numpy(), channels // towers, formula)
    np.testing.assert_allclose(TowerLRN(towers, formula=formula)(a).numpy(), expected, rtol=1e-5)


def test_the_two_formulas_differ_and_code_is_torchs_lrn_per_tower() -> None:
    a = 60 * torch.rand(1, 96, 2, 2, generator=torch.Generator().manual_seed(2))
    code, text = TowerLRN(2, formula="code")(a), TowerLRN(2, formula="text")(a)
    assert torch.all(code > text) and (code / text).mean() > 1.1  # text divides by more
    torch_lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    per_tower = torch.cat([torch_lrn(a[:, :48]), torch_lrn(a[:, 48:])], dim=1)
    torch.testing.assert_close(code, per_tower, rtol=1e-6, atol=0)


@pytest.mark.parametrize("formula", ["code", "text"])
def test_lrn_window_stops_at_the_tower_boundary(formula: str) -> None:
    a = torch.ones(1, 96, 1, 1)
    b = a.clone()
    b[:, 48:] = 1000.0  # tower 2 huge: tower 1's channel 47 must not see it
    lrn = TowerLRN(2, formula=formula)
    assert torch.equal(lrn(a)[:, :48], lrn(b)[:, :48])
    plain = nn.LocalResponseNorm(5, lrn.torch_alpha, 0.75, 2.0)  # one window over all 96
    assert not torch.equal(plain(b)[:, 47], plain(a)[:, 47])


@pytest.mark.parametrize("formula", ["code", "text"])
def test_model_lrn_layers_follow_the_formula(paper: nn.Module, formula: str) -> None:
    model = paper if formula == "code" else build_model(ModelConfig(lrn_formula=formula)).eval()
    assert ModelConfig().lrn_formula == "code"  # the fixture is the default: the authors' code
    seen = capture(model, ("norm1", "norm2"), 50 * images(1))
    for name, tower in (("norm1", 48), ("norm2", 128)):
        a, b = seen[name]
        np.testing.assert_allclose(b.numpy(), lrn_numpy(a.double().numpy(), tower, formula),
                                   rtol=1e-5, atol=1e-6)


# Weight std per layer: the text's N(0, 0.01); the authors' 2012 layer file (initW) and
# cuda-convnet2's: 0.03 on conv3-5. Written out here, not read from model.py.
TEXT_STD = {"conv1": 0.01, "conv2": 0.01, "conv3": 0.01, "conv4": 0.01, "conv5": 0.01,
            "fc6": 0.01, "fc7": 0.01, "fc8": 0.01}
CODE_STD = {**TEXT_STD, "conv3": 0.03, "conv4": 0.03, "conv5": 0.03}


CAFFE_STD = {**TEXT_STD, "fc6": 0.005, "fc7": 0.005}  # bvlc_alexnet's weight_filler


@pytest.mark.parametrize("init, stds, one", [("code", CODE_STD, 1.0), ("paper", TEXT_STD, 1.0),
                                             ("caffe", CAFFE_STD, 0.1)])
def test_paper_init_statistics_and_bias_constants(paper: nn.Module, init: str, stds: dict,
                                                  one: float) -> None:
    model = paper if init == "code" else build_model(ModelConfig(init=init))
    for name, std in stds.items():
        layer = getattr(model, name)
        w = layer.weight.detach().double()
        tol = 6 * std / np.sqrt(w.numel())  # ~6 standard errors
        assert abs(w.mean().item()) < tol, name
        assert abs(w.std().item() - std) < std * 0.05, name
        expected_bias = one if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.all(layer.bias == expected_bias), name


def test_the_default_init_is_the_authors_code() -> None:
    assert ModelConfig().init == "code"


def test_he_init_scales_with_fan_in() -> None:
    model = build_model(ModelConfig(init="he", num_classes=10))
    for name, gain in (("conv1", 2 ** 0.5), ("conv3", 2 ** 0.5), ("fc6", 2 ** 0.5), ("fc8", 1.0)):
        layer = getattr(model, name)
        expected = gain / layer.weight[0].numel() ** 0.5
        assert abs(layer.weight.std().item() / expected - 1) < 0.05, name
        assert torch.all(layer.bias == 0), name


def test_dropout_only_on_fc6_and_fc7_outputs() -> None:
    model = build_model(ModelConfig(num_classes=10))
    drops = {n: m.p for n, m in model.named_modules() if isinstance(m, nn.Dropout)}
    assert drops == {"drop6": 0.5, "drop7": 0.5}
    x = images()
    model.eval()
    ref = capture(model, ("fc6",), x)
    model.train()
    torch.manual_seed(3)
    got = capture(model, ("fc6", "fc7", "fc8"), x)
    assert torch.equal(got["fc6"][0], ref["fc6"][0])  # conv output: no dropout
    # fc7's input is dropout(relu(fc6's output)), fc8's is dropout(relu(fc7's output)): 0 or 2x.
    for before, after in (("fc6", "fc7"), ("fc7", "fc8")):
        live, dropped = torch.relu(got[before][1]), got[after][0]
        kept = dropped != 0
        torch.testing.assert_close(dropped[kept], 2 * live[kept])
        share = (~kept & (live != 0)).sum().item() / (live != 0).sum().item()
        assert 0.45 < share < 0.55, (after, share)


def test_dropout_zero_and_other_ablations() -> None:
    model = build_model(ModelConfig(dropout=0.0, lrn=False, activation="tanh", towers=1,
                                    num_classes=10))
    kinds = {type(m) for m in model.modules()}
    assert nn.Dropout not in kinds and TowerLRN not in kinds and nn.Tanh in kinds
    assert model.conv2.groups == model.conv4.groups == model.conv5.groups == 1
    assert count_parameters(model)["conv2"] == 256 * 96 * 25 + 256
    model.train()
    x = images()
    assert torch.equal(model(x), model(x))  # nothing random left


def test_owt_follows_torchvision_layout() -> None:
    model = build_model(ModelConfig(arch="owt", num_classes=10))
    drops = {n for n, m in model.named_modules() if isinstance(m, nn.Dropout)}
    assert drops == {"drop5", "drop6"}  # torchvision drops the inputs of fc6 and fc7
    assert not any(isinstance(m, TowerLRN) for m in model.modules())
    assert model.conv1.out_channels == 64 and model.conv2.groups == 1


@pytest.mark.parametrize("init", ["code", "paper", "he"])
def test_one_sgd_step_lowers_the_loss_on_a_fixed_batch(init: str) -> None:
    # lr 3e-4: on unit-std inputs, 10 classes and a batch of 8, one step at lr 0.01 overshoots
    # from every init (measured: loss 2.59 -> 10.4), at 0.003 from "code" and "paper" (2.65 ->
    # 4.99, 2.59 -> 3.42): the fc layers' biases of 1 make a large, input-independent fc7 output
    # (docs/TRAINING.md, "Why the paper's recipe stalls").
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=10, init=init))
    x, y = images(8, seed=2), torch.arange(8) % 10
    opt = torch.optim.SGD(model.parameters(), lr=3e-4, momentum=0.9, weight_decay=5e-4)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return nn.functional.cross_entropy(model(x), y).item()

    before = eval_loss()
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert eval_loss() < before - 0.05


def test_channels_last_and_cpu_bf16_autocast(paper: nn.Module) -> None:
    x = images()
    ref = paper(x)
    model = paper.to(memory_format=torch.channels_last)
    try:
        x_cl = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x_cl), ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x_cl)
        assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
        assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3
    finally:
        paper.to(memory_format=torch.contiguous_format)


@pytest.mark.parametrize("bad", [{"towers": 3}, {"dropout": 1.0}, {"arch": "vgg"},
                                 {"activation": "gelu"}, {"num_classes": 0}])
def test_bad_config_is_a_clear_error(bad: dict) -> None:
    """Checked where configs are built (tests/test_config.py has the rules), not in the model."""
    (key, value), = bad.items()
    with pytest.raises(ConfigError, match="model\\."):
        resolve_config(None, sets=(f"model.{key}={value}",))


def test_traces_as_one_graph_for_torch_compile(paper: nn.Module) -> None:
    # aot_eager traces like inductor but skips code generation (no C++ compiler needed here).
    compiled = torch.compile(paper, backend="aot_eager", fullgraph=True)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), paper(x))


def test_layer_macs_count_each_layer_from_its_shapes() -> None:
    """conv1: 55·55 outputs × 96 kernels × 3·11·11 MACs; the total is half torch's FLOP count."""
    from torch.utils.flop_counter import FlopCounterMode

    from alexnet_dali.model.alexnet import layer_macs

    model = build_model(ModelConfig())
    macs = layer_macs(model)
    assert macs["conv1"] == 55 * 55 * 96 * 3 * 11 * 11
    assert macs["conv2"] == 27 * 27 * 256 * 48 * 5 * 5  # groups=2: each kernel sees 48 maps
    assert macs["fc6"] == 256 * 6 * 6 * 4096 and macs["fc8"] == 4096 * 1000
    assert macs["total"] == sum(v for k, v in macs.items() if k != "total") == 724_406_816
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(torch.zeros(1, 3, 224, 224))
    assert counter.get_total_flops() == 2 * macs["total"]
