"""preprocess's worker side: source images -> encoded JPEGs (and their pixel sums), in order.

Workers read each image at its locator and return encoded JPEG bytes (or a reject); with sums
on (the train split under `preprocess --pca`) they also decode each JPEG they have just encoded
and add its pixels to exact sums (`tools.pixelstats`), the pixels `pca-stats` would decode from
the shard. At most `4 x workers` batches are in flight, so memory does not grow with the
dataset; results come back in submission order, so the output does not depend on the worker
count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, Sequence

from alexnet_dali.errors import ctrl_c_blocked_for_new_workers
from alexnet_dali.tools import images
from alexnet_dali.tools.pixelstats import Accumulator, PixelSums, decode_rgb
from alexnet_dali.tools.sources import Locator, SourceList, SourceReader

BATCH = 8  # source images per worker task
Result = bytes | tuple[str, str]  # JPEG bytes, or (reason, detail) for a reject


def _init_worker(settings: images.ImageSettings) -> None:
    global _SETTINGS, _READER
    _SETTINGS, _READER = settings, SourceReader()
    images.allow_pixels(settings.max_pixels)


_SETTINGS = images.ImageSettings()
_READER = SourceReader()


def convert_batch(task: tuple[list[Locator], bool]) -> tuple[list[Result], PixelSums | None]:
    """Worker task: source locators -> JPEG bytes or rejects; with `sums`, also the exact pixel
    sums of those JPEGs decoded again (the pixels pca-stats would read from the shard)."""
    locators, sums = task
    out: list[Result] = []
    pixels = Accumulator(mean_image=True) if sums else None
    for loc in locators:
        try:
            out.append(images.convert_image(_READER.read(loc), _SETTINGS))
        except images.RejectedImage as e:
            out.append((e.reason, e.detail))
            continue
        if pixels is not None:
            pixels.add(decode_rgb(out[-1]))
    return out, pixels.sums() if pixels is not None and pixels.images else None


def _batches(sources: SourceList, jobs: Sequence[Any],
             sums: bool) -> Iterator[tuple[list[Locator], bool]]:
    """Tasks for the sources of `jobs` in order, `BATCH` at a time; a batch never spans two
    shards (its pixel sums belong to one shard's record)."""
    for job in jobs:
        entries = job.entries.tolist()
        for start in range(0, len(entries), BATCH):
            yield [sources.locator(i) for i in entries[start:start + BATCH]], sums


def _per_image(done: tuple[list[Result], PixelSums | None],
               ) -> Iterator[tuple[Result, PixelSums | None]]:
    """A batch's results one by one; its pixel sums ride with its last image."""
    results, sums = done
    for k, result in enumerate(results):
        yield result, sums if k == len(results) - 1 else None


def converted(sources: SourceList, jobs: Sequence[Any], settings: images.ImageSettings,
              workers: int, sums: bool = False) -> Iterator[tuple[Result, PixelSums | None]]:
    """(result, pixel sums or None) for every source of `jobs`, in order; at most 4 batches per
    worker in flight."""
    if workers <= 1:
        _init_worker(settings)
        try:
            for batch in _batches(sources, jobs, sums):
                yield from _per_image(convert_batch(batch))
        finally:
            _READER.close()
        return
    # a worker killed by the OS raises BrokenProcessPool here instead of hanging the run
    with ProcessPoolExecutor(workers, get_context("spawn"), _init_worker,
                             (settings,)) as pool:
        pending: deque = deque()
        for batch in _batches(sources, jobs, sums):
            with ctrl_c_blocked_for_new_workers():  # submit starts the workers as needed
                pending.append(pool.submit(convert_batch, batch))
            if len(pending) >= 4 * workers:
                yield from _per_image(pending.popleft().result())
        while pending:
            yield from _per_image(pending.popleft().result())
