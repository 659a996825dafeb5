"""The CLI's help: every command listed with a whole one-line summary and shows an example."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from alexnet_dali.cli import main


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += all_commands(command, prefix + (name,))
        else:
            out.append(prefix + (name,))
    return out


EXPECTED = {("sample-data",), ("preprocess",), ("merge-manifest",), ("pca-stats",), ("train",),
            ("eval",), ("figures",), ("bench", "preprocess"), ("bench", "pipeline"),
            ("bench", "train"), ("bench", "pca-stats"), ("predict",), ("export",),
            ("import-weights",)}


def test_every_command_of_the_product_is_registered():
    assert EXPECTED <= set(all_commands(main))


@pytest.mark.parametrize("group_args", [(), ("bench",)])
def test_listing_shows_every_summary_whole(group_args):
    result = CliRunner().invoke(main, [*group_args, "--help"])
    assert result.exit_code == 0, result.output
    listing = result.output.split("Commands:")[1].strip().splitlines()
    assert listing, result.output
    for line in listing:
        name, summary = line.split(maxsplit=1)
        assert not summary.endswith("..."), f"summary of {name!r} is cut: {summary!r}"
        assert summary.count("(") == summary.count(")"), f"summary of {name!r} is cut: {summary!r}"


@pytest.mark.parametrize("args", sorted(EXPECTED))
def test_each_command_help_shows_an_example(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "alexnet-dali " in result.output.split("Example")[1]


def every_command(group: click.Group = main) -> list[click.Command]:
    """Every command of the CLI, the group itself first, groups included."""
    out: list[click.Command] = [group]
    for command in group.commands.values():
        out += every_command(command) if isinstance(command, click.Group) else [command]
    return out


@pytest.mark.parametrize("command", every_command(), ids=lambda c: c.name)
def test_every_option_has_help_and_shows_its_default(command: click.Command) -> None:
    """One line of help per option; a default, where there is one, shown in --help."""
    ctx = click.Context(command, info_name=command.name)
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        assert param.help and "\n" not in param.help, f"{command.name} {param.opts}: no help"
        _, text = param.get_help_record(ctx)
        default = param.get_default(ctx, call=False)
        plain_flag = param.is_flag and not param.secondary_opts  # off unless given
        has_default = not plain_flag and isinstance(default, (str, int, float, bool))
        if has_default or getattr(param, "config_key", None):
            assert "[default: " in text, f"{command.name} {param.opts}: default not shown"


@pytest.mark.parametrize("command", every_command(), ids=lambda c: c.name)
def test_every_numeric_option_declares_its_range(command: click.Command) -> None:
    """A count, size, seed or std is refused out of range by click (exit 2, one line), not
    accepted silently or ended in a traceback; train's flags go through the config's checks."""
    for param in command.params:
        if (isinstance(param, click.Option) and not param.is_flag
                and not getattr(param, "config_key", None)
                and isinstance(param.type, (click.types.IntParamType,
                                            click.types.FloatParamType))):
            assert isinstance(param.type, (click.IntRange, click.FloatRange)), (
                f"{command.name} {param.opts}: {param.type} without a range")


@pytest.mark.parametrize("args", [
    ["preprocess", ".", "out", "--shard-size", "0"], ["preprocess", ".", "out", "--size", "0"],
    ["preprocess", ".", "out", "--workers", "-1"], ["pca-stats", ".", "--workers", "-1"],
    ["verify", ".", "--workers", "-1"], ["sample-data", "out", "--classes", "0"],
    ["bench", "colour-noise", "--batches", "0"], ["bench", "colour-noise", "--threads", "0"],
    ["bench", "colour-noise", "--pca-std", "-1"], ["bench", "preprocess", "--repeats", "0"],
    ["sample-data", "out", "--min-side", "500", "--max-side", "100"],
    ["figures", ".", "--queries", "0"],
])
def test_out_of_range_options_are_one_usage_error(args: list[str], tmp_path: Path,
                                                  monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert not (tmp_path / "out").exists()  # refused before anything is written
    assert result.exit_code == 2, result.output
    assert "Invalid value for" in result.output and "Traceback" not in result.output


def test_train_flags_show_the_config_defaults() -> None:
    """train's flags default to None (so that only a given flag overrides --config), and
    --help shows the config's own default for each."""
    from alexnet_dali.config.resolve import FLAG_KEYS

    train = main.commands["train"]
    ctx = click.Context(train, info_name="train")
    shown = {p.name: p.get_help_record(ctx)[1] for p in train.params
             if isinstance(p, click.Option) and p.name in FLAG_KEYS}
    assert set(shown) == set(FLAG_KEYS)
    assert "[default: 90]" in shown["epochs"] and "[default: 0.01]" in shown["lr"]
    assert "[default: runs/alexnet]" in shown["run_dir"]
    assert "[default: no-model-parallel]" in shown["model_parallel"]
    assert "[default: pca-noise]" in shown["pca_noise"]
    assert "[default: 2]" in shown["workers"]  # loader.num_threads


def test_choices_are_explained() -> None:
    result = CliRunner().invoke(main, ["train", "--help"])
    text = " ".join(result.output.split())
    assert "paper: two towers" in text and "owt: torchvision's one tower" in text
    assert "he: Kaiming normal" in text
    # No example trains an ablation into a run dir named after the paper.
    for line in result.output.splitlines():
        assert not ("runs/paper" in line and "--set" in line), line


@pytest.mark.parametrize("args,expected", [([], 64), (["--batch-per-rank", "5"], 5),
                                           (["--batch-size", "3"], 3)])
def test_eval_counts_its_batch_per_rank_under_its_own_name(monkeypatch, args, expected) -> None:
    """--batch-size is the global batch (train: all ranks together; bench train, predict: one
    process); eval's per-rank count is --batch-per-rank, its old spelling still taken."""
    from alexnet_dali.use import evaluate

    seen = {}
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", lambda *a, **k: seen.update(k))
    result = CliRunner().invoke(main, ["eval", "synthetic", "--checkpoint", "run", *args])
    assert result.exit_code == 0, result.output
    assert seen["batch_size"] == expected
    assert "--batch-size INTEGER" not in CliRunner().invoke(main, ["eval", "--help"]).output
    shown = CliRunner().invoke(main, ["train", "--help"]).output
    assert "Global batch: images per step, all ranks together" in " ".join(shown.split())
