"""The optimiser: the paper's SGD and torch's against NumPy replays, parameter groups (weight decay
on weights only, bias lr multiplier), the lr schedule, optimizer state through checkpoints."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from alexnet_dali.config.schema import OptimConfig
from alexnet_dali.train.optim import PaperSGD, build_optimizer, group_sizes, load_optimizer_state
from alexnet_dali.train.schedule import LRSchedule


def _grads(steps: int, shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for _ in range(steps)]


def _run_torch(opt_factory, w0: np.ndarray, grads: list[np.ndarray], lrs: list[float]):
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = opt_factory([w])
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return w.detach().numpy()


def test_paper_sgd_matches_numpy_reference_across_an_lr_drop():
    w0 = np.random.default_rng(1).normal(size=(5, 3))
    grads, lrs = _grads(8, w0.shape), [0.01] * 4 + [0.001] * 4
    # the paper: v <- 0.9 v - 0.0005 eps w - eps dL/dw ; w <- w + v
    w, v = w0.copy(), np.zeros_like(w0)
    for g, eps in zip(grads, lrs):
        v = 0.9 * v - 0.0005 * eps * w - eps * g
        w = w + v
    got = _run_torch(lambda p: PaperSGD(p, lr=0.01, momentum=0.9, weight_decay=5e-4), w0, grads,
                     lrs)
    np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-14)


def test_paper_and_pytorch_rules_agree_at_constant_lr_and_differ_after_a_drop():
    w0 = np.random.default_rng(2).normal(size=(4,))
    grads = _grads(8, w0.shape, seed=3)
    paper = lambda p: build_optimizer(p, OptimConfig(update="paper"))  # noqa: E731
    pytorch = lambda p: build_optimizer(p, OptimConfig(update="pytorch"))  # noqa: E731
    constant = [0.01] * 8
    np.testing.assert_allclose(_run_torch(paper, w0, grads, constant),
                               _run_torch(pytorch, w0, grads, constant), rtol=1e-12)
    dropped = [0.01] * 4 + [0.001] * 4
    a, b = _run_torch(paper, w0, grads, dropped), _run_torch(pytorch, w0, grads, dropped)
    assert np.abs(a - b).max() > 1e-6


def _schedule(**kw) -> LRSchedule:
    param = torch.nn.Parameter(torch.zeros(1))
    cfg = OptimConfig(**kw)
    return LRSchedule(torch.optim.SGD([param], lr=cfg.lr), cfg)


def test_plateau_divides_by_ten_at_most_max_drops_times():
    s = _schedule(lr=0.01, schedule="plateau", plateau_patience=1, max_drops=3)
    errors = [0.9, 0.8, 0.8, 0.7, 0.75, 0.8, 0.9, 0.9, 0.9]
    lrs = []
    for epoch, err in enumerate(errors):
        s.end_epoch(epoch, err)
        lrs.append(s.lr)
    expected = [0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-5, 1e-5, 1e-5, 1e-5]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)
    restored = _schedule(lr=0.01, schedule="plateau")
    restored.load_state_dict(s.state_dict(), epoch=len(errors))
    assert restored.lr == pytest.approx(1e-5) and restored.drops == 3


def test_step_schedule_and_warmup():
    s = _schedule(lr=0.1, schedule="step", step_epochs=(2, 4), warmup_epochs=1)
    assert s.lr == pytest.approx(0.1)  # warmup epoch 0 of 1: lr * 1/1
    lrs = []
    for epoch in range(5):
        s.end_epoch(epoch, None)
        lrs.append(s.lr)
    np.testing.assert_allclose(lrs, [0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-9)


def test_step_warmup_rises_linearly_then_leaves_the_epoch_lr_alone():
    s = _schedule(lr=0.01, schedule="plateau", warmup_steps=4)
    seen = []
    for step in range(6):
        s.at_step(step)
        seen.append((s.lr, s.optimizer.param_groups[0]["lr"]))
    np.testing.assert_allclose([lr for lr, _ in seen], [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])
    assert all(group == lr for lr, group in seen)
    s.end_epoch(0, 0.5)
    s.end_epoch(1, 0.6)  # no improvement: a drop, which the finished warm-up leaves as it is
    s.at_step(50)
    assert s.lr == pytest.approx(1e-3) and s.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    resumed = _schedule(lr=0.01, schedule="plateau", warmup_steps=4)
    resumed.load_state_dict(_schedule(lr=0.01, warmup_steps=4).state_dict(), epoch=0)
    resumed.at_step(1)  # a resume in the middle of the warm-up takes up its line
    assert resumed.lr == pytest.approx(0.005)


@pytest.mark.parametrize("hold", [False, True])
def test_hold_at_chance_counts_no_epoch_at_chance(hold: bool):
    s = _schedule(lr=0.01, schedule="plateau", plateau_patience=1, hold_at_chance=hold)
    for epoch, (err, chance) in enumerate([(0.75, True), (0.75, True), (0.75, True),
                                           (0.40, False), (0.45, False)]):
        s.end_epoch(epoch, err, at_chance=chance)
    # held: the three epochs at chance count for nothing; 0.40 is the first best, 0.45 a drop.
    # Not held: 0.75 twice more drops twice, and 0.45 after 0.40 a third time.
    assert s.drops == (1 if hold else 3)
    assert s.lr == pytest.approx(1e-3 if hold else 1e-5)


def test_paper_sgd_state_survives_a_weights_only_checkpoint(tmp_path):
    grads = _grads(6, (3, 2), seed=4)
    w0 = np.random.default_rng(5).normal(size=(3, 2))

    def make(p):
        return PaperSGD(p, lr=0.01, momentum=0.9, weight_decay=5e-4)

    straight = _run_torch(make, w0, grads, [0.01] * 6)
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = make([w])
    for g in grads[:3]:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    torch.save({"w": w.detach(), "opt": opt.state_dict()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    w2 = torch.nn.Parameter(saved["w"].clone())
    opt2 = make([w2])
    opt2.load_state_dict(saved["opt"])
    for g in grads[3:]:
        w2.grad = torch.tensor(g, dtype=torch.float64)
        opt2.step()
    np.testing.assert_array_equal(w2.detach().numpy(), straight)


def _numpy_grouped(rule: str, params: dict, grads: list[dict], lrs: list[float], wd: dict,
                   mult: dict, momentum: float = 0.9) -> dict:
    """Replay either SGD rule per parameter with its group's decay and lr multiplier."""
    w = {k: v.copy() for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in params.items()}
    for g, lr in zip(grads, lrs):
        for k in w:
            eps = lr * mult[k]
            if rule == "paper":  # v <- m v - wd eps w - eps g ; w <- w + v
                buf[k] = momentum * buf[k] - wd[k] * eps * w[k] - eps * g[k]
                w[k] = w[k] + buf[k]
            else:  # torch: b <- m b + (g + wd w) ; w <- w - eps b
                buf[k] = momentum * buf[k] + g[k] + wd[k] * w[k]
                w[k] = w[k] - eps * buf[k]
    return w


@pytest.mark.parametrize("rule", ["paper", "pytorch"])
@pytest.mark.parametrize("bias_decay,bias_lr_mult", [(False, 1.0), (True, 1.0), (False, 2.0)])
def test_grouped_sgd_matches_numpy_across_a_scheduled_lr_drop(rule, bias_decay, bias_lr_mult):
    rng = np.random.default_rng(7)
    params = {"weight": rng.normal(size=(4, 3)), "bias": rng.normal(size=(4,))}
    layer = torch.nn.Linear(3, 4).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(params["weight"]))
        layer.bias.copy_(torch.tensor(params["bias"]))
    cfg = OptimConfig(lr=0.01, update=rule, schedule="step", step_epochs=(1,),
                      bias_decay=bias_decay, bias_lr_mult=bias_lr_mult)
    opt = build_optimizer(layer.parameters(), cfg)
    assert [g["name"] for g in opt.param_groups] == ["weights", "biases"]
    schedule = LRSchedule(opt, cfg)
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(8)]
    lrs = []
    for step, g in enumerate(grads):
        if step == 4:  # epoch 1 begins: the step schedule divides the lr by 10
            schedule.end_epoch(0, None)
        lrs.append(schedule.lr)
        assert opt.param_groups[1]["lr"] == pytest.approx(bias_lr_mult * schedule.lr)
        layer.weight.grad, layer.bias.grad = (torch.tensor(g["weight"]), torch.tensor(g["bias"]))
        opt.step()
    assert lrs == [0.01] * 4 + [pytest.approx(0.001)] * 4
    wd = {"weight": 5e-4, "bias": 5e-4 if bias_decay else 0.0}
    expected = _numpy_grouped(rule, params, grads, lrs, wd, {"weight": 1.0, "bias": bias_lr_mult})
    np.testing.assert_allclose(layer.weight.detach().numpy(), expected["weight"], rtol=1e-12)
    np.testing.assert_allclose(layer.bias.detach().numpy(), expected["bias"], rtol=1e-12)


def test_biases_are_undecayed_by_default_in_the_paper_net():
    from alexnet_dali.config.schema import ModelConfig
    from alexnet_dali.model.alexnet import build_model

    model = build_model(ModelConfig(num_classes=10))
    groups = build_optimizer(model.parameters(), OptimConfig()).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups[0]["params"]} == {f"{layer}.weight" for layer in (
        "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")}
    assert all(names[id(p)].endswith(".bias") for p in groups[1]["params"])
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (5e-4, 0.0)
    assert (groups[0]["lr"], groups[1]["lr"]) == (0.01, 0.01)


@pytest.mark.parametrize("rule", ["paper", "pytorch"])
def test_grouped_optimizer_state_resumes_bitwise_through_a_weights_only_file(tmp_path, rule):
    cfg = OptimConfig(update=rule, bias_lr_mult=2.0)
    rng = np.random.default_rng(8)
    grads = [(torch.tensor(rng.normal(size=(4, 3))), torch.tensor(rng.normal(size=(4,))))
             for _ in range(6)]

    def layer_from(state=None):
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 4).double()
        if state is not None:
            layer.load_state_dict(state)
        return layer

    def steps(layer, opt, gs):
        for gw, gb in gs:
            layer.weight.grad, layer.bias.grad = gw, gb
            opt.step()

    straight = layer_from()
    opt = build_optimizer(straight.parameters(), cfg)
    steps(straight, opt, grads)
    first = layer_from()
    opt = build_optimizer(first.parameters(), cfg)
    steps(first, opt, grads[:3])
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    resumed = layer_from(saved["model"])
    opt2 = build_optimizer(resumed.parameters(), cfg)
    load_optimizer_state(opt2, saved["opt"])
    assert group_sizes(saved["opt"]) == group_sizes(opt2.state_dict()) == [1, 1]
    steps(resumed, opt2, grads[3:])
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)


def test_loading_an_optimizer_state_keeps_this_runs_group_settings():
    layer = torch.nn.Linear(3, 4)
    old = build_optimizer(layer.parameters(), OptimConfig(bias_lr_mult=1.0, bias_decay=True))
    new = build_optimizer(layer.parameters(), OptimConfig(bias_lr_mult=2.0))
    load_optimizer_state(new, old.state_dict())
    assert new.param_groups[1]["lr_mult"] == 2.0 and new.param_groups[1]["weight_decay"] == 0.0
    assert new.param_groups[1]["params"] == [layer.bias]
