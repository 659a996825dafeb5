"""How much disk the suite's temp folder takes: sampled while it runs, reported at the end.

A thread adds up the allocated size of every file under pytest's basetemp every
`SAMPLE_SECONDS` and keeps the largest total and the test running then. The terminal summary
says it, with what is left in the basetemp at the end (the session fixtures' data; passed
tests' own folders are deleted, `tmp_path_retention_policy = "failed"`), e.g.
  temp use: peak 0.52 GB during tests/test_resume.py::test_x, 0.01 GB left in /tmp/pytest-...
A peak above `--temp-limit-gb` (default 1) fails a session whose tests passed: a test that
writes full-size checkpoints again shows up here (after a failure the kept folders of the failed
tests count too, so the limit is not checked then). The sampling can miss a short peak, never
invent one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

SAMPLE_SECONDS = 0.25
GB = 1e9


def gb(size: int) -> str:
    """Bytes in GB with two decimals (the limit's unit)."""
    return f"{size / GB:.2f} GB"


def allocated_bytes(root: Path) -> int:
    """Disk blocks under `root` (as `du` counts them); files vanishing meanwhile are skipped."""
    total, stack = 0, [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


class TempUse:
    """The sampler thread and what it found."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.peak, self.peak_test = 0, ""
        self.left = 0
        self.by_test: dict[str, int] = {}  # each test's sampled peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tempuse", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        """One measurement; the largest so far is kept with the test then running."""
        size, test = allocated_bytes(self.root), _running["test"]
        self.by_test[test] = max(size, self.by_test.get(test, 0))
        if size > self.peak:
            self.peak, self.peak_test = size, test

    def stop(self) -> None:
        """End the sampling; measure once more and what is left."""
        self._stop.set()
        self._thread.join()
        self.sample()
        self.left = allocated_bytes(self.root)

    def lines(self, top: int = 3) -> list[str]:
        """The summary: the peak, what is left, and the tests with the largest peaks."""
        largest = sorted(self.by_test.items(), key=lambda item: -item[1])[:top]
        return [f"temp use: peak {gb(self.peak)} during {self.peak_test or '-'}, "
                f"{gb(self.left)} left in {self.root} (sampled every {SAMPLE_SECONDS} s)",
                "largest: " + "; ".join(f"{test} {gb(size)}" for test, size in largest)]


_state: dict[str, TempUse] = {}
_running = {"test": "(session start)"}  # the test now running, for the peak's attribution


def pytest_addoption(parser: pytest.Parser) -> None:
    """--temp-limit-gb, --temp-top."""
    parser.addoption("--temp-limit-gb", type=float, default=1.0,
                     help="fail the session if its temp folder's sampled peak exceeds this "
                          "(default 1; 0: no limit)")
    parser.addoption("--temp-top", type=int, default=3,
                     help="list this many tests with the largest temp-folder peaks (default 3)")


@pytest.fixture(scope="session", autouse=True)
def temp_use_sampler(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start sampling the basetemp before the first test (stopped at the session's end)."""
    _state["use"] = TempUse(tmp_path_factory.getbasetemp())


def pytest_runtest_logstart(nodeid: str, location: tuple) -> None:
    """Remember which test runs, for the peak's attribution."""
    _running["test"] = nodeid


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deletes a passing session's basetemp
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop sampling; over the limit fails the session."""
    use = _state.get("use")
    if use is None:
        return
    use.stop()
    limit = session.config.getoption("--temp-limit-gb")
    if limit and use.peak > limit * GB and not session.testsfailed:  # else failed tests' kept
        session.exitstatus = pytest.ExitCode.TESTS_FAILED            # folders count too


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Print the line (and why the session failed, if it was the limit)."""
    use = _state.get("use")
    if use is None:
        return
    for line in use.lines(config.getoption("--temp-top")):
        terminalreporter.write_line(line)
    limit = config.getoption("--temp-limit-gb")
    if terminalreporter.stats.get("failed") or terminalreporter.stats.get("error"):
        terminalreporter.write_line("(failed tests keep their temp folders: they count in "
                                    "the peak, which is not checked against the limit then)")
    elif limit and use.peak > limit * GB:
        terminalreporter.write_line(f"FAILED: the temp folder's peak is above --temp-limit-gb "
                                    f"{limit:g}: make that test write less", red=True)
