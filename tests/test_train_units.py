"""Trainer units: config resolution, checkpoints and resume refusals, recipes, status lines
(the optimiser's own tests are in test_optim.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from alexnet_dali.model import checkpoint as ckpt_io
from alexnet_dali.train import resume
from alexnet_dali.config.resolve import (from_dict, load_config_file, parse_set, resolve_config,
                                         to_dict)
from alexnet_dali.config.schema import OptimConfig, TrainConfig
from alexnet_dali.errors import ConfigError
from alexnet_dali.train.optim import build_optimizer, group_sizes


def test_config_precedence_defaults_file_set_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('epochs = 5\nbatch_size = 64\n[optim]\nlr = 0.5\nupdate = "paper"\n')
    cfg = resolve_config("data/", config_file=str(toml), sets=("optim.lr=0.25", "model.lrn=false"),
                         flags={"batch_size": 32, "epochs": None})
    assert cfg.epochs == 5 and cfg.batch_size == 32 and cfg.optim.lr == 0.25
    assert cfg.optim.update == "paper" and cfg.model.lrn is False and cfg.data == "data/"
    assert cfg.optim.momentum == TrainConfig().optim.momentum


def test_config_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"learning_rate.*valid keys"):
        resolve_config("d", config_file=str(bad))
    with pytest.raises(ConfigError, match="key=value"):
        parse_set("optim.lr")
    assert parse_set("model.arch=owt") == {"model": {"arch": "owt"}}


def test_an_old_config_with_loader_batch_size_still_loads(tmp_path):
    """loader.batch_size (per rank) was a field once; old config.json/checkpoints drop it."""
    old = to_dict(TrainConfig(batch_size=64))
    old["loader"]["batch_size"] = 32
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    cfg = resolve_config("d", config_file=str(path))
    assert cfg == TrainConfig(data="d", batch_size=64)
    assert from_dict(TrainConfig, old) == TrainConfig(batch_size=64)
    assert "batch_size" not in to_dict(cfg)["loader"]


def test_checkpoint_atomic_keep_last_and_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    for step in range(1, 5):
        state = ckpt_io.new_state(model=model.state_dict(), config=TrainConfig(batch_size=8),
                                  epoch=0, global_step=step, manifest_sha256="abc")
        ckpt_io.save_checkpoint(tmp_path, state, keep=2)
    names = [p.name for p in ckpt_io.list_checkpoints(tmp_path)]
    assert names == ["ckpt-0000-0000003.pt", "ckpt-0000-0000004.pt"]
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))
    loaded = ckpt_io.load_checkpoint(tmp_path)  # a run dir: the newest
    assert loaded["global_step"] == 4
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())
    (tmp_path / "checkpoints" / "ckpt-0000-0000005.pt").write_bytes(b"truncated")
    with pytest.raises(ckpt_io.CheckpointError, match="ckpt-0000-0000005.pt: not a readable"):
        ckpt_io.load_checkpoint(tmp_path)


def test_resuming_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path):
    model = torch.nn.Linear(3, 2)
    for step in (10, 20, 30):
        state = ckpt_io.new_state(model=model.state_dict(), config=TrainConfig(), epoch=0,
                                  global_step=step)
        ckpt_io.save_checkpoint(tmp_path, state, keep=5)
    moved = ckpt_io.set_aside_newer(tmp_path, 10)
    assert [p.name for p in moved] == ["ckpt-0000-0000020.pt", "ckpt-0000-0000030.pt"]
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path)] == ["ckpt-0000-0000010.pt"]
    aside = sorted(p.name for p in (tmp_path / "checkpoints" / "abandoned").iterdir())
    assert aside == ["ckpt-0000-0000020.pt", "ckpt-0000-0000030.pt"]  # moved, not deleted
    assert ckpt_io.set_aside_newer(tmp_path, 10) == []


def test_rng_capture_restore_roundtrip_through_weights_only(tmp_path):
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    np.random.normal()  # leave a cached gaussian in numpy's state
    state = resume.capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.normal(size=3), random.random())
    resume.restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.normal(size=3), random.random())
    assert torch.equal(expected[0], got[0])
    np.testing.assert_array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_resume_refuses_another_world_size_batch_or_dataset():
    ckpt = {**ckpt_io.new_state(model={}, config=TrainConfig(batch_size=128), epoch=0,
                                global_step=1, world_size=2, manifest_sha256="a" * 64),
            "path": "run/ckpt.pt"}  # load_checkpoint adds the path
    ok = dict(world_size=2, batch_size=128, manifest_sha256="a" * 64, allow_mismatch=False)
    assert resume.check_compatible(ckpt, **ok) == []
    for change, words in [({"world_size": 1}, "world size 2 -> 1"),
                          ({"batch_size": 64}, "batch size 128 -> 64"),
                          ({"manifest_sha256": "b" * 64}, "manifest")]:
        with pytest.raises(ckpt_io.CheckpointError, match=f"run/ckpt.pt.*{words}.*allow-mismatch"):
            resume.check_compatible(ckpt, **{**ok, **change})
    assert resume.check_compatible(ckpt, **{**ok, "world_size": 4, "allow_mismatch": True})


def test_resume_refuses_an_optimizer_state_of_another_layout_or_rule():
    cfg = TrainConfig(model_parallel=True, optim=OptimConfig(update="paper"))
    ckpt = {**ckpt_io.new_state(model={}, config=cfg, epoch=0, global_step=1), "path": "r/c.pt"}
    same = dict(model_parallel=True, update="paper", allow_mismatch=False)
    assert resume.optimizer_changes(ckpt, **same) == []
    for change, words in [({"model_parallel": False}, "model_parallel True -> False"),
                          ({"update": "pytorch"}, "optim.update paper -> pytorch")]:
        with pytest.raises(ckpt_io.CheckpointError, match=f"r/c.pt.*{words}.*allow-mismatch"):
            resume.optimizer_changes(ckpt, **{**same, **change})
    allowed = resume.optimizer_changes(ckpt, model_parallel=False, update="paper",
                                        allow_mismatch=True)
    assert allowed == ["model_parallel True -> False"]


def test_resume_refuses_a_single_group_optimizer_state_unless_allowed():
    layer = torch.nn.Linear(3, 4)
    old_state = torch.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9).state_dict()
    ckpt = {"config": {"optim": {"update": "pytorch"}}, "optimizer": old_state, "path": "r/c.pt"}
    now = group_sizes(build_optimizer(layer.parameters(), OptimConfig()).state_dict())
    same = dict(model_parallel=False, update="pytorch", group_sizes=now)
    with pytest.raises(ckpt_io.CheckpointError,
                       match=r"r/c.pt.*parameter groups \[2\] -> \[1, 1\].*allow-mismatch"):
        resume.optimizer_changes(ckpt, **same, allow_mismatch=False)
    assert resume.optimizer_changes(ckpt, **same, allow_mismatch=True) == [
        "optimizer parameter groups [2] -> [1, 1] (a checkpoint from before weight decay and "
        "lr were set per group)"]
    ckpt["optimizer"] = build_optimizer(layer.parameters(), OptimConfig()).state_dict()
    assert resume.optimizer_changes(ckpt, **same, allow_mismatch=False) == []


def test_older_checkpoints_load_with_the_lrn_and_decay_they_were_trained_with(tmp_path):
    old = ckpt_io.new_state(model={}, config=TrainConfig(), epoch=0, global_step=1)
    del old["config"]["model"]["lrn_formula"], old["config"]["optim"]["bias_decay"]  # aged
    ckpt_io.save_checkpoint(tmp_path, old, keep=1)
    config = ckpt_io.load_checkpoint(tmp_path)["config"]
    assert config["model"]["lrn_formula"] == "text" and config["optim"]["bias_decay"] is True
    ckpt_io.save_checkpoint(tmp_path, ckpt_io.new_state(model={}, config=TrainConfig(), epoch=0,
                                                        global_step=2), keep=1)
    config = ckpt_io.load_checkpoint(tmp_path)["config"]  # today's keys are left as saved
    assert config["model"]["lrn_formula"] == "code" and config["optim"]["bias_decay"] is False


def test_paper_toml_is_the_papers_recipe_as_its_authors_ran_it():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "paper.toml"
    cfg = resolve_config("data/", config_file=str(path))
    m, o, a = cfg.model, cfg.optim, cfg.augment
    assert (cfg.epochs, cfg.batch_size) == (90, 128)
    assert (m.arch, m.towers, m.lrn, m.lrn_formula, m.overlap_pool, m.dropout, m.activation,
            m.init, m.fc_width) == ("paper", 2, True, "code", True, 0.5, "relu", "code", 4096)
    assert (o.lr, o.momentum, o.weight_decay, o.update, o.bias_decay, o.bias_lr_mult) == (
        0.01, 0.9, 5e-4, "paper", False, 1.0)
    assert (o.schedule, o.max_drops, o.warmup_epochs, o.warmup_steps, o.hold_at_chance,
            o.lr_scaling, m.bias_one) == ("plateau", 3, 0, 0, False, "none", 1.0)
    assert (a.crop, a.random_crop, a.flip, a.pca_noise, a.pca_std, a.pca_scale, a.pca_rescale,
            a.mean, a.std_normalize) == (224, True, True, True, 0.1, "sqrt", False, "image", False)
    # Every key is written out, so a changed default cannot change the recipe unseen.
    written = load_config_file(path)
    for section in ("model", "optim", "augment"):
        expected = set(to_dict(cfg)[section]) - {"num_classes", "step_epochs", "warmup_epochs",
                                                  "crop"}
        assert expected <= set(written[section]), (section, expected - set(written[section]))


def test_the_short_run_recipe_is_the_papers_plus_its_switches_only():
    """configs/short-run.toml changes exactly the documented switches; demo.toml only the run's
    length and bookkeeping: the demo is the paper's recipe plus the switches."""
    paper = to_dict(resolve_config("d", config_file="paper"))
    short = to_dict(resolve_config("d", config_file=("paper", "short-run")))
    demo = to_dict(resolve_config("d", config_file=("paper", "short-run", "demo")))

    def changed(a: dict, b: dict, prefix: str = "") -> set[str]:
        out = set()
        for key in a:
            if isinstance(a[key], dict):
                out |= changed(a[key], b[key], f"{prefix}{key}.")
            elif a[key] != b[key]:
                out.add(prefix + key)
        return out

    assert changed(paper, short) == {"model.bias_one", "optim.lr_scaling",
                                     "optim.plateau_patience", "optim.hold_at_chance"}
    assert (short["model"]["bias_one"], short["optim"]["lr_scaling"],
            short["optim"]["plateau_patience"], short["optim"]["hold_at_chance"]) == (
        0.1, "linear", 2, True)
    assert changed(short, demo) == {"epochs", "batch_size", "log_every", "keep_checkpoints"}


def test_config_files_layer_in_order_and_names_are_the_built_in_recipes(tmp_path, monkeypatch):
    from pathlib import Path

    from alexnet_dali.config.resolve import find_config_file, recipe_names

    assert recipe_names() == ["demo", "paper", "short-run"]
    repo = Path(__file__).resolve().parents[1] / "configs"
    assert find_config_file("paper").read_bytes() == (repo / "paper.toml").read_bytes()
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text("epochs = 3\n[optim]\nlr = 0.5\n")
    second.write_text("[optim]\nlr = 0.25\n")
    cfg = resolve_config("d", config_file=(str(first), str(second)))
    assert (cfg.epochs, cfg.optim.lr) == (3, 0.25)
    with pytest.raises(ConfigError, match=r"^nosuch: no such config file, nor a built-in recipe "
                                          r"\(those are demo, paper, short-run\)"):
        resolve_config("d", config_file="nosuch")
    with pytest.raises(ConfigError, match=r"b\.toml: \[model\] bias_one = -1: must be >= 0"):
        second.write_text("[model]\nbias_one = -1\n")
        resolve_config("d", config_file=(str(first), str(second)))
    # a folder named like a recipe (make demo writes demo/) does not hide it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert resolve_config("d", config_file="demo").batch_size == 32
    with pytest.raises(ConfigError, match=r"^demo/: a folder, not a config file"):
        resolve_config("d", config_file="demo/")


def test_bias_one_belongs_to_the_code_and_paper_inits():
    with pytest.raises(ConfigError, match="model.bias_one sets the biases that init 'code' and "
                                          "'paper' set to 1"):
        resolve_config("d", sets=("model.bias_one=0.1", "model.init=he"))
    from alexnet_dali.model.alexnet import build_model

    model = build_model(resolve_config("d", sets=("model.bias_one=0.1",)).model)
    layers = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
    assert {name: float(getattr(model, name).bias[0].detach()) for name in layers} == pytest.approx(
        {"conv1": 0, "conv2": 0.1, "conv3": 0, "conv4": 0.1, "conv5": 0.1, "fc6": 0.1,
         "fc7": 0.1, "fc8": 0})


@pytest.mark.parametrize("scaling, batch, peak", [("none", 32, 0.01), ("linear", 32, 0.0025),
                                                  ("linear", 128, 0.01), ("linear", 256, 0.02)])
def test_linear_lr_scaling_is_the_papers_lr_per_128_images(scaling, batch, peak):
    from alexnet_dali.train.optim import build_optimizer
    from alexnet_dali.train.schedule import LRSchedule

    cfg = resolve_config("d", sets=(f"optim.lr_scaling={scaling!r}",), flags={"batch_size": batch})
    param = torch.nn.Parameter(torch.zeros(2, 2))
    schedule = LRSchedule(build_optimizer([param], cfg.optim), cfg.optim, cfg.batch_size)
    assert schedule.lr == pytest.approx(peak)
    assert schedule.optimizer.param_groups[0]["lr"] == pytest.approx(peak)
    schedule.end_epoch(0, 0.5)
    schedule.end_epoch(1, 0.6)  # a plateau: one drop, from the scaled lr
    assert schedule.lr == pytest.approx(peak / 10)


def test_model_parallel_devices_two_gpus_per_rank_cpu_twice_or_a_clear_refusal():
    from alexnet_dali.train.builders import model_parallel_devices
    from alexnet_dali.errors import ConfigError as UserConfigError

    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    assert model_parallel_devices(cpu, 0, gpus=0) == (cpu, cpu)
    assert model_parallel_devices(cuda, 0, gpus=2) == (torch.device("cuda:0"),
                                                       torch.device("cuda:1"))
    assert model_parallel_devices(torch.device("cuda:1"), 1, gpus=4) == (
        torch.device("cuda:2"), torch.device("cuda:3"))
    with pytest.raises(UserConfigError, match=r"needs two GPUs per process.*1 GPU\(s\) are "
                                              r"visible; drop --model-parallel"):
        model_parallel_devices(cuda, 0, gpus=1)
    with pytest.raises(UserConfigError, match="cuda:2 and cuda:3, but 3 GPU"):
        model_parallel_devices(torch.device("cuda:1"), 1, gpus=3)


def test_status_lines_say_where_a_run_stands():
    from alexnet_dali.train.runlog import chance_note, complete_line, devices_line, resume_line

    assert resume_line("r/ckpt-0002-0000020.pt", 2, 6, 3, 10, 23) == (
        "resuming from r/ckpt-0002-0000020.pt: epoch 3 of 6, 3 of 10 steps done, global step 23")
    assert complete_line("c.pt", 6, 6, 60).startswith("c.pt: the run is complete (6 of 6 epochs")
    assert devices_line(["cuda:0", "cuda:1"]) == (
        "model-parallel: tower 1 on cuda:0, tower 2 on cuda:1")
    assert "for testing" in devices_line([torch.device("cpu")] * 2)
    # The chance note: once, after 3 epochs, while the error is at chance: within 0.05, or two
    # standard deviations of a guess's accuracy on the val images (70: 2·sqrt(.25·.75/70)).
    assert "add --config short-run" in chance_note(0.75, 4, 10_000, 3)
    assert chance_note(0.71, 4, 10_000, 3) and not chance_note(0.69, 4, 10_000, 3)
    assert chance_note(0.6857, 4, 70, 3) and not chance_note(0.64, 4, 70, 3)
    assert not chance_note(0.75, 4, 70, 2) and not chance_note(0.75, 4, 70, 4)
    assert not chance_note(0.9, 1000, 50_000, 3)  # a real run that learns: far below 0.999
