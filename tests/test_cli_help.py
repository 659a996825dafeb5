"""The CLI's help: every command listed with a whole one-line summary and shows an example."""

from __future__ import annotations

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
            ("bench", "train"), ("predict",), ("export",), ("import-weights",)}


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
