"""CLI commands of the data stage (filled in by that stage)."""

from __future__ import annotations

COMMANDS: list = []
BENCH_COMMANDS: list = []
