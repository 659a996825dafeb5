"""CLI commands of the train stage (filled in by that stage)."""

from __future__ import annotations

COMMANDS: list = []
BENCH_COMMANDS: list = []
