"""CLI commands of the pipeline stage (filled in by that stage)."""

from __future__ import annotations

COMMANDS: list = []
BENCH_COMMANDS: list = []
