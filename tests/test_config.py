"""Config values are converted to their field's type and checked (types, choices, ranges, rules)
where configs are built, before anything runs; errors name the source, key, value and what is
allowed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from alexnet_dali.model.checkpoint import config_from_checkpoint
from alexnet_dali.cli import main
from alexnet_dali.config.resolve import resolve_config, to_dict
from alexnet_dali.config.rules import conv5_side
from alexnet_dali.config.schema import (AugmentConfig, LoaderConfig, ModelConfig, OptimConfig,
                                        TrainConfig)
from alexnet_dali.errors import ConfigError
from alexnet_dali.model.alexnet import build_model

SECTIONS = {"": TrainConfig, "model.": ModelConfig, "optim.": OptimConfig,
            "augment.": AugmentConfig, "loader.": LoaderConfig}


def config_fields() -> list[tuple[str, object, object]]:
    """(dotted key, type hint, default) of every config value field."""
    out = []
    for prefix, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[f.name]):
                out.append((prefix + f.name, hints[f.name], getattr(cls(), f.name)))
    return out


def refused(*sets: str, **flags) -> str:
    with pytest.raises(ConfigError) as info:
        resolve_config("data", sets=sets, flags=flags)
    return str(info.value)


# --- the examples of the issues, through the CLI: exit 2, one line, before any data is read ---

@pytest.mark.parametrize("args,message", [
    (["--set", "augment.mean=chanel"],
     "--set augment.mean=chanel: expected one of 'channel', 'image', 'none'"),
    (["--set", "optim.lr=abc"], "--set optim.lr=abc: expected a number"),
    (["--set", "augment.pca_std=-0.1"], "--set augment.pca_std=-0.1: must be >= 0"),
    (["--epochs", "-1"], "--epochs -1 (epochs): must be >= 1"),
    (["--batch-size", "0"], "--batch-size 0 (batch_size): must be >= 1"),
])
def test_cli_refuses_bad_values_before_reading_data(tmp_path: Path, args: list[str],
                                                    message: str) -> None:
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(tmp_path / "no-such-data"), "--run-dir",
                                       str(run_dir), *args])
    assert result.exit_code == 2, result.output
    # the data dir does not exist: had it been looked at, the error would name its manifest
    assert result.output.splitlines() == [f"error: {message}"]
    assert not run_dir.exists()


def test_lrn_false_in_any_case_switches_lrn_off() -> None:
    cfg = resolve_config("data", sets=("model.lrn=False",))
    assert cfg.model.lrn is False
    assert isinstance(build_model(cfg.model).norm1, nn.Identity)


# --- conversion to the declared type ---

@pytest.mark.parametrize("word,value", [("true", True), ("True", True), ("YES", True), ("1", True),
                                        ("false", False), ("FALSE", False), ("no", False),
                                        ("0", False), ('"Yes"', True)])
def test_booleans_accept_their_words_in_any_case(word: str, value: bool) -> None:
    assert resolve_config("d", sets=(f"augment.flip={word}",)).augment.flip is value


def test_values_become_the_declared_type() -> None:
    cfg = resolve_config("d", sets=('epochs="7"', "optim.lr=1", "optim.step_epochs=[2, 4]",
                                    "run_dir=2024", "channels_last=auto", "model.towers=1"))
    assert cfg.epochs == 7 and type(cfg.optim.lr) is float and cfg.optim.lr == 1.0
    assert cfg.optim.step_epochs == (2, 4) and cfg.run_dir == "2024"
    assert cfg.channels_last is None and cfg.model.towers == 1
    assert resolve_config("d", sets=("channels_last=yes",)).channels_last is True


@pytest.mark.parametrize("item,reason", [
    ("augment.flip=maybe", "expected a boolean: true/false, yes/no or 1/0"),
    ("epochs=2.5", "expected an integer"), ("epochs=true", "expected an integer"),
    ("optim.lr=nan", "expected a finite number"), ("optim.lr=true", "expected a number"),
    ("optim.step_epochs=30", "expected a list of integers"),
    ("run_dir=true", "expected a string"), ("model=3", "expected the [model] section's keys"),
])
def test_values_of_another_type_are_refused(item: str, reason: str) -> None:
    assert refused(item).startswith(f"--set {item}: {reason}")


def test_every_field_type_is_supported_and_every_default_is_valid() -> None:
    for key, _, default in config_fields():
        value = list(default) if isinstance(default, tuple) else default
        got = resolve_config(None, base=_nest(key, value))
        assert _get(got, key) == default, key


def test_every_choice_field_lists_its_choices() -> None:
    literal = [(k, get_args(h)) for k, h, _ in config_fields() if get_origin(h) is Literal]
    assert len(literal) >= 10
    for key, choices in literal:
        message = refused(f"{key}=bogus")
        assert message.startswith(f"--set {key}=bogus: expected one of ")
        assert all(repr(c) in message for c in choices), message


# --- ranges ---

@pytest.mark.parametrize("key,bad,allowed", [
    ("optim.lr", "0", "> 0"), ("optim.lr", "-0.01", "> 0"),
    ("model.dropout", "1.0", "in [0, 1)"), ("model.dropout", "-0.1", "in [0, 1)"),
    ("augment.pca_std", "-0.1", ">= 0"), ("epochs", "0", ">= 1"), ("batch_size", "0", ">= 1"),
    ("optim.momentum", "1", "in [0, 1)"), ("optim.weight_decay", "-1e-4", ">= 0"),
    ("loader.num_threads", "0", ">= 1"), ("keep_checkpoints", "0", ">= 1"),
    ("log_every", "0", ">= 1"), ("loader.prefetch", "0", ">= 1"),
    ("loader.hw_decoder_load", "1.5", "in [0, 1]"), ("model.num_classes", "0", ">= 1"),
    ("optim.step_epochs", "[30, -1]", ">= 0"), ("seed", "-1", ">= 0"),
    ("optim.plateau_patience", "0", ">= 1"), ("loader.shuffle_buffer", "0", ">= 1"),
    ("augment.crop", "0", ">= 1"), ("threads", "-1", ">= 0"),
    ("augment.std_rgb", "[58, 0, 57]", "> 0"), ("augment.mean_rgb", "[124, 300, 104]",
                                               "in [0, 255]"),
])
def test_out_of_range_values_are_refused(key: str, bad: str, allowed: str) -> None:
    assert refused(f"{key}={bad}") == f"--set {key}={bad}: must be {allowed}"


@pytest.mark.parametrize("item", ["model.dropout=0", "optim.momentum=0", "optim.weight_decay=0",
                                  "loader.hw_decoder_load=0", "loader.hw_decoder_load=1",
                                  "augment.pca_std=0", "epochs=1", "max_steps_per_epoch=0"])
def test_range_ends_that_are_allowed(item: str) -> None:
    resolve_config("d", sets=(item,))


def bounded_fields() -> list[tuple[str, object, object]]:
    """(dotted key, element type, Bounds) of every config field declared with a range."""
    out = []
    for prefix, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "bounds" in f.metadata:
                hint = hints[f.name]
                element = get_args(hint)[0] if get_origin(hint) is tuple else hint
                out.append((prefix + f.name, element, f.metadata["bounds"]))
    return out


def just_outside(bounds: object, element: type) -> list[float]:
    """Values next to each end of `bounds` that the range excludes."""
    step = 1 if element is int else 0.5
    out = []
    if bounds.ge is not None:
        out.append(bounds.ge - step)
    if bounds.gt is not None:
        out.append(bounds.gt)
    if bounds.le is not None:
        out.append(bounds.le + step)
    if bounds.lt is not None:
        out.append(bounds.lt)
    return out


def test_every_declared_range_is_enforced_at_both_ends() -> None:
    """Not only the listed examples: each ranged field refuses a value just past each limit."""
    checked = 0
    for key, element, bounds in bounded_fields():
        for bad in just_outside(bounds, element):
            text = f"[{bad}]" if key in TUPLE_KEYS else str(bad)
            assert refused(f"{key}={text}") == f"--set {key}={text}: must be {bounds}", key
            checked += 1
    assert {"optim.bias_lr_mult", "optim.max_drops", "optim.warmup_epochs", "checkpoint_every",
            "max_steps_per_epoch"} <= {k for k, _, _ in bounded_fields()}
    assert checked >= 25


TUPLE_KEYS = {k for k, h, _ in config_fields() if get_origin(h) is tuple}


def test_the_defaults_are_the_authors_recipe() -> None:
    """sqrt(lambda) colour noise without the 1/(1+0.1) rescale, LRN as cuda-convnet computes it,
    biases undecayed at the weights' lr."""
    augment, model, optim = AugmentConfig(), ModelConfig(), OptimConfig()
    assert (augment.pca_scale, augment.pca_rescale, augment.pca_std) == ("sqrt", False, 0.1)
    assert model.lrn and model.lrn_formula == "code"
    assert (optim.bias_decay, optim.bias_lr_mult, optim.weight_decay) == (False, 1.0, 5e-4)


def test_named_flags_go_through_the_same_checks() -> None:
    assert refused(lr=0.0) == "--lr 0.0 (optim.lr): must be > 0"
    assert refused(workers=0) == "--workers 0 (loader.num_threads): must be >= 1"
    assert refused(keep_checkpoints=0) == "--keep-checkpoints 0 (keep_checkpoints): must be >= 1"


# --- where a value came from ---

def test_config_file_errors_name_the_file_and_the_section(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[optim]\nlr = "abc"\n')
    with pytest.raises(ConfigError) as info:
        resolve_config("d", config_file=str(bad))
    assert str(info.value) == f"{bad}: [optim] lr = 'abc': expected a number"
    bad.write_text("epochs = 0\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: epochs = 0: must be >= 1$"):
        resolve_config("d", config_file=str(bad))
    bad.write_text("[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: \[optim\] unknown key\(s\) "
                                          r"\['learning_rate'\]; valid keys are \[.*'lr'"):
        resolve_config("d", config_file=str(bad))


def test_a_checkpoint_config_is_checked_too() -> None:
    config = to_dict(TrainConfig())
    config["model"]["towers"] = 3
    with pytest.raises(ConfigError, match=r"^run/ckpt\.pt:config: model\.towers = 3: expected one "
                                          r"of 1, 2$"):
        config_from_checkpoint({"config": config, "path": "run/ckpt.pt"})


# --- rules between fields ---

@pytest.mark.parametrize("items,words", [
    (("model_parallel=true", "model.towers=1"), "needs model.arch = 'paper' and model.towers = 2"),
    (("model_parallel=true", "model.arch=owt"), "(have model_parallel = True, model.arch = 'owt'"),
    (("device=cpu", "loader.device=gpu"), "loader.device = 'gpu' decodes on the training GPU"),
    (("augment.crop=256",), "augment.crop must be 223..254 with model.overlap_pool = true"),
    (("augment.crop=227", "model.overlap_pool=false"), "(have augment.crop = 227, "
                                                      "model.overlap_pool = False)"),
    (("augment.mean_rgb=[124, 116]",), "augment.mean_rgb and augment.std_rgb each take 3 values"),
    (("augment.std_rgb=[58]",), "(have augment.mean_rgb = (), augment.std_rgb = (58.0,))"),
])
def test_cross_field_rules(items: tuple[str, ...], words: str) -> None:
    message = refused(*items)
    assert message.startswith("config: ") and words in message


def test_rules_accept_what_works() -> None:
    resolve_config("d", sets=("model_parallel=true",))
    resolve_config("d", sets=("augment.crop=227",))
    resolve_config("d", sets=("augment.crop=200", "model.overlap_pool=false"))
    resolve_config("d", sets=("device=cuda", "loader.device=gpu"))
    resolve_config("d", sets=("augment.mean_rgb=[123.7, 116.3, 103.5]",
                              "augment.std_rgb=[58.4, 57.1, 57.4]"))


@pytest.mark.parametrize("overlap,crops", [(True, (222, 223, 254, 255)),
                                           (False, (194, 195, 226, 227))])
def test_the_crop_rule_matches_the_real_network(overlap: bool, crops: tuple[int, ...]) -> None:
    """conv5_side (the rule's arithmetic) agrees with what model/alexnet.py's net accepts."""
    net = build_model(ModelConfig(num_classes=2, overlap_pool=overlap)).eval()
    for crop in crops:
        try:
            with torch.no_grad():
                net(torch.zeros(1, 3, crop, crop))
            works = True
        except RuntimeError:
            works = False
        assert works == (conv5_side(crop, overlap) == 6), crop


def _nest(dotted: str, value: object) -> dict:
    head, _, rest = dotted.partition(".")
    return {head: _nest(rest, value) if rest else value}


def _get(cfg: object, dotted: str) -> object:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("args", [["eval", "d", "--checkpoint", "c", "--batch-size", "0"],
                                  ["bench", "train", "--steps", "0"],
                                  ["bench", "pipeline", "--hw-decoder-load", "1.5"]])
def test_other_commands_refuse_out_of_range_options(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Invalid value for" in result.output, result.output
