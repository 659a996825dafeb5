"""`bench pca-stats`: pca-stats' rate against the decode floor, on the same shards, one run.

The floor is reading the train shards and decoding every JPEG (the decoder pca-stats uses) and
nothing else: no statistics can be computed faster than the pixels arrive. The two passes take
turns on one pool of `workers` processes (started once, warmed by an untimed pass each), every
other round in reverse order, so both see the same background load on a shared machine.
"""

from __future__ import annotations

import os
import statistics
import time
from multiprocessing import get_context

from alexnet_dali.tools import manifest as mf
from alexnet_dali.tools import pca
from alexnet_dali.tools.pixelstats import decode_rgb
from alexnet_dali.tools.shards import iter_shard


def decode_shard(task: pca.Task) -> int:
    """Worker: stream one shard and decode every JPEG (nothing else); returns the count."""
    store, tar, limit, _ = task
    count = 0
    with store.open(tar) as stream:
        for count, (_, members) in enumerate(iter_shard(stream), 1):
            decode_rgb(members["jpg"])
            if count >= limit:
                break
    return count


def stats_pass(pool, tasks: list[pca.Task]) -> int:
    """One pca-stats pass (sums per shard, merged as they arrive); returns the images."""
    total = None
    for part in pool.imap(pca.shard_sums, tasks):
        if part.images:
            total = part if total is None else total.merge(part)
    pca.statistics(total)
    return total.images


def decode_pass(pool, tasks: list[pca.Task]) -> int:
    """One decode-only pass; returns the images."""
    return sum(pool.imap(decode_shard, tasks))


def run_bench(data: str, workers: int, repeats: int) -> dict[str, list[float]]:
    """img/s of the decode floor and of pca-stats (mean image on), alternating; printed."""
    manifest = mf.read_manifest(data)
    tasks = pca.shard_tasks(manifest, None, mean_image=True)
    passes = {"decode floor (read + decode)": decode_pass, "pca-stats": stats_pass}
    rates: dict[str, list[float]] = {name: [] for name in passes}
    print(f"data {manifest.root}: {manifest.split('train').samples} train images; {workers} "
          f"workers; {repeats} rounds; load average {os.getloadavg()[0]:.1f}")
    with get_context("spawn").Pool(workers) as pool:
        for run in passes.values():  # warm-up: workers' imports, the page cache
            run(pool, tasks)
        for r in range(repeats):
            order = list(passes) if r % 2 == 0 else list(reversed(passes))
            for name in order:
                start = time.perf_counter()
                images = passes[name](pool, tasks)
                rates[name].append(images / (time.perf_counter() - start))
    print("| pass | median img/s | min | max |\n|---|---:|---:|---:|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
              f"{max(values):,.0f} |")
    floor, stats = (statistics.median(v) for v in rates.values())
    print(f"pca-stats / decode floor (medians): {stats / floor:.2f}x; load average after "
          f"{os.getloadavg()[0]:.1f}")
    return rates
