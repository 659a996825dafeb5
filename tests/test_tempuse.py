"""The suite's temp-folder measurement (`tests/tempuse.py`): an inner pytest session whose test
holds a 30 MB file for a second is measured, and fails past a limit below that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CONFTEST = f"""import sys
sys.path.insert(0, {str(TESTS)!r})
from tempuse import (  # noqa: F401
    pytest_addoption, pytest_runtest_logstart, pytest_sessionfinish, pytest_terminal_summary,
    temp_use_sampler)
"""
BIG_TEST = """import time

def test_big(tmp_path):
    (tmp_path / "x").write_bytes(b"1" * 30_000_000)
    time.sleep(1.0)
"""


def inner_session(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    tmp_path.mkdir()
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_inner.py").write_text(BIG_TEST)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "base"),
                           "-o", "tmp_path_retention_policy=failed",  # as pyproject.toml says
                           str(tmp_path / "test_inner.py"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_the_peak_is_measured_and_named_and_a_limit_fails_the_session(tmp_path):
    passed = inner_session(tmp_path / "a")
    assert passed.returncode == 0, passed.stdout
    line = next(x for x in passed.stdout.splitlines() if x.startswith("temp use: "))
    assert line.startswith("temp use: peak 0.03 GB during test_inner.py::test_big, 0.00 GB "
                           f"left in {tmp_path / 'a' / 'base'}"), line
    over = inner_session(tmp_path / "b", "--temp-limit-gb", "0.02")
    assert over.returncode == 1, over.stdout
    assert "FAILED: the temp folder's peak is above --temp-limit-gb 0.02" in over.stdout
