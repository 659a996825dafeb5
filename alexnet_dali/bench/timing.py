"""Timing loaders that take turns: images/s per stream over rounds that give each stream a turn
(so that all see the same background load), CPU ms per batch, and the Markdown table of it.
Shared by `bench pipeline` and the doctor's throughput checks."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Iterator


def cycle(iterable) -> Iterator:
    """Batches forever: a new pass over `iterable` (a new epoch) whenever one ends."""
    while True:
        yield from iterable


def time_batches(batches: Iterator, count: int, sync: Callable[[], None]) -> float:
    """Seconds to pull `count` batches (after `sync` of the device)."""
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    sync()
    return time.perf_counter() - start


def measure(streams: dict[str, tuple[Iterator, int]], batch_size: int, warmup: int, count: int,
            reps: int, sync: Callable[[], None],
            cpu_ms: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Images/s per stream over `reps` rounds that give each stream a turn.

    `streams`: name → (batches, batches it holds in flight). A turn pulls `warmup` + in-flight
    untimed batches (draining the queue it refilled while idle), times `count` batches, then
    waits as long as refilling its queue takes at the measured rate, so that no stream works in
    the background of another's timed window. Interleaving the rounds lets both see the same
    background load on a shared machine; every other round runs them in reverse order, so that
    no stream always follows the same one. `cpu_ms`, when given, gets each turn's CPU time of
    this process per timed batch (ms): the cost of an in-process pipeline, which a busy machine
    changes far less than its rate (a DataLoader's workers are other processes: not counted).
    """
    rates: dict[str, list[float]] = {name: [] for name in streams}
    for rep in range(reps):
        order = list(streams) if rep % 2 == 0 else list(reversed(streams))
        for name in order:
            batches, in_flight = streams[name]
            time_batches(batches, warmup + in_flight, sync)
            cpu_start = time.process_time()
            rate = count * batch_size / time_batches(batches, count, sync)
            if cpu_ms is not None:
                cpu_ms.setdefault(name, []).append((time.process_time() - cpu_start) / count * 1e3)
            rates[name].append(rate)
            time.sleep(1.5 * in_flight * batch_size / rate)
    return rates


def table(rows: list[tuple[str, list[float]]], cpu_ms: dict[str, list[float]] | None = None,
          in_process: tuple[str, ...] = ()) -> str:
    """Markdown table: median, min and max images/s per pipeline; with `cpu_ms`, the median CPU
    ms per batch of the `in_process` pipelines."""
    head = "| pipeline | median img/s | min | max | reps |"
    lines = [head + " CPU ms/batch |" if cpu_ms else head,
             "|---|---:|---:|---:|---:|" + ("---:|" if cpu_ms else "")]
    for name, rates in rows:
        line = (f"| {name} | {statistics.median(rates):,.0f} | {min(rates):,.0f} | "
                f"{max(rates):,.0f} | {len(rates)} |")
        if cpu_ms:
            line += (f" {statistics.median(cpu_ms[name]):.1f} |" if name in in_process
                     else " (other processes) |")
        lines.append(line)
    return "\n".join(lines)


def print_ratio(rates: dict[str, list[float]], name: str, other: str) -> None:
    """`name / other (medians): r`, when both were measured."""
    if name in rates and other in rates:
        ratio = statistics.median(rates[name]) / statistics.median(rates[other])
        print(f"{name} / {other} (medians): {ratio:.2f}x")
