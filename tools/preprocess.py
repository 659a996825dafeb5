"""Source images -> shuffled WebDataset shards of 256x256 JPEGs, resumable and splittable.

Every input layout (`layouts`) gives a listing sorted by canonical name (`sources`). Samples go to
shards by a seeded permutation of that listing, and shards are assembled in the main process in
that order, so the output is byte-identical whatever the worker count or the layout the same
images came in. Workers read each image at its locator and return encoded JPEG bytes; at most a
bounded number of batches is in flight, so memory does not grow with the dataset.
"""

from __future__ import annotations

import math
import os
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alexnet_dali import __version__
from alexnet_dali.errors import DataError
from alexnet_dali.tools import images, layouts, outdir
from alexnet_dali.tools import manifest as mf
from alexnet_dali.tools import pca as pc
from alexnet_dali.tools import records as rc
from alexnet_dali.tools.imagenet import Classes
from alexnet_dali.tools.pixelstats import PixelSums, save_image_sum, sums_path
from alexnet_dali.tools.preprocess_workers import Result, converted
from alexnet_dali.tools.scan import SplitScan
from alexnet_dali.tools.sources import SourceList
from alexnet_dali.tools.shards import ShardWriter, encode_label, sha256_file

PCA_SPLIT = "train"  # whose pixel sums make pca.json
RERUN = "re-run the same command: it resumes (finished shards are kept)"
KEY_DIGITS = 9


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of a preprocess run (everything that changes the output bytes, plus workers)."""

    image: images.ImageSettings = images.ImageSettings()
    seed: int = 0
    shard_size: int = 1000
    workers: int = 0  # 0: all cores
    part: tuple[int, int] = (1, 1)  # (i, n), 1-based: build shards k with k % n == i - 1
    pca: bool = True  # pixel sums of the train split as it is written -> pca.json

    def settings(self) -> dict:
        """The manifest's `settings` (workers, part and pca do not change the shards)."""
        return {"size": self.image.size, "quality": self.image.quality,
                "filter": images.FILTER_NAME, "draft": self.image.draft,
                **self.image.describe(), "max_pixels": self.image.max_pixels,
                "seed": self.seed, "shard_size": self.shard_size, "version": __version__}


@dataclass(frozen=True)
class ShardJob:
    """One shard to build: its index and the listing indexes of its samples, in write order."""

    index: int
    entries: np.ndarray  # int64 indexes into the split's SourceList
    first: int  # position (key) of the first sample


def shuffled(count: int, split: str, seed: int) -> np.ndarray:
    """Listing indexes in shard order: a permutation seeded by (seed, split) of the sorted list."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    return rng.permutation(count)


def plan_jobs(found: SplitScan, split: str, config: PreprocessConfig) -> list[ShardJob]:
    """All shards of a split (every part), each with its slice of the shuffled listing."""
    order = shuffled(len(found.sources), split, config.seed)
    size = config.shard_size
    return [ShardJob(k, order[k * size:(k + 1) * size], k * size)
            for k in range(math.ceil(len(order) / size))]


def key_of(position: int) -> str:
    """Sample key: the position in the shuffled order, zero-padded."""
    return f"{position:0{KEY_DIGITS}d}"


def write_shard(out: Path, split: str, job: ShardJob, listing: SourceList,
                results: Iterator[tuple[Result, PixelSums | None]],
                sums: bool = False) -> tuple[int, int]:
    """Consume one shard's results, write tar + index + record (with the pixel sums when
    `sums`); returns (written, rejected)."""
    stem = rc.shard_stem(split, job.index)
    writer = ShardWriter(out / split / f"{stem}.tar")
    rejects, sources, pixels = [], [], None
    try:
        for position, i, (result, part) in zip(range(job.first, job.first + len(job.entries)),
                                               job.entries.tolist(), results):
            if part is not None:
                pixels = part if pixels is None else pixels.merge(part)
            name = str(listing.names[i])
            if isinstance(result, tuple):
                rejects.append([name, *result])
            else:
                key = key_of(position)
                writer.add(key, {"jpg": result, "cls": encode_label(int(listing.labels[i]))})
                sources.append([key, name])
        if writer.samples:
            writer.commit()
        else:
            writer.abort()
    except BaseException:
        writer.abort()
        raise
    has_tar = writer.samples > 0
    record = {"shard": job.index, "samples": writer.samples, "rejects": rejects,
              "tar": f"{split}/{stem}.tar" if has_tar else None,
              "index": f"{split}/{stem}.idx" if has_tar else None,
              "sha256": sha256_file(writer.tar_path) if has_tar else None,
              "size": writer.tar_path.stat().st_size if has_tar else None,
              "sources": sources}  # provenance: key -> the source's canonical name
    record_path = rc.sidecar_path(out, split, job.index)
    if sums:  # the per-position sum beside the record, written before it (the record is last)
        pixels = pixels or PixelSums.zero(None)
        if pixels.image_sum is not None:
            save_image_sum(sums_path(record_path), pixels.image_sum)
        record["pixel_sums"] = pixels.record()
    outdir.write_json_atomic(record_path, record)
    return writer.samples, len(rejects)


def resolve_workers(workers: int) -> int:
    """0 -> the cores this process may use."""
    if workers > 0:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def remove_stale_temps(out: Path, split: str, jobs: list[ShardJob]) -> None:
    """Delete temporary files an interrupted run left for these shards (not other parts')."""
    for job in jobs:
        for tmp in (out / split).glob(f"{rc.shard_stem(split, job.index)}.*tmp"):
            tmp.unlink(missing_ok=True)


def pending_jobs(out: Path, split: str, jobs: list[ShardJob],
                 config: PreprocessConfig) -> list[ShardJob]:
    """This part's shards that are not complete yet."""
    i, n = config.part
    mine = [job for job in jobs if job.index % n == i - 1]
    return [job for job in mine if not rc.shard_done(out, split, job.index)]


def known_classes(out: Path) -> Classes | None:
    """The classes of shards already in OUT (every split's plan, words merged), if any."""
    plans = rc.read_plans(out)
    if plans:
        return rc.merged_classes(plans, out)
    if (out / mf.MANIFEST_NAME).exists():
        listed = mf.read_manifest(out).classes
        return Classes(tuple(c.name for c in listed), tuple(c.words for c in listed))
    return None


def checked_plans(out: Path, dataset: layouts.Dataset, known: Classes | None,
                  config: PreprocessConfig) -> dict[str, dict]:
    """split -> plan to save, after every refusal that OUT's earlier runs call for, all before
    anything is converted; SRC's class words are filled in from OUT's."""
    classes = dataset.classes
    if known is not None:
        if known.names != classes.names:
            raise DataError(f"{out}: holds shards of {len(known.names)} other classes than SRC's "
                            f"{len(classes.names)}; use a new output folder")
        classes = classes.merged(known, "SRC", f"the shards already in {out}")
    rc.check_settings(out, config.settings(), set(dataset.splits))
    plans = {}
    for name, split_scan in dataset.splits.items():
        shards = len(plan_jobs(split_scan, name, config))
        plans[name] = rc.checked_plan(out, name, rc.make_plan(name, split_scan, classes, shards,
                                                              config.settings()))
    return plans


def print_note(text: str) -> None:
    """Default sink of notes and warnings: one line on stderr (beside the progress bar)."""
    tqdm.write(text, file=sys.stderr)


def build_split(out: Path, split: str, split_scan: SplitScan, plan: dict,
                config: PreprocessConfig, progress: bool) -> tuple[int, int]:
    """Build this part's unfinished shards of one split (its lock held); returns (written,
    rejected) now."""
    jobs = plan_jobs(split_scan, split, config)
    rc.write_plan(out, split, plan)
    todo = pending_jobs(out, split, jobs, config)
    remove_stale_temps(out, split, todo)
    outdir.remove_dead_temps(out / split)
    total = sum(len(job.entries) for job in todo)
    bar = tqdm(total=total, unit="img", desc=f"preprocess {split}", disable=not progress,
               dynamic_ncols=True)
    sums = config.pca and split == PCA_SPLIT
    results = converted(split_scan.sources, todo, config.image, resolve_workers(config.workers),
                        sums)
    written = rejected = 0
    with bar, closing(results):  # closing stops the workers now if a shard write fails
        for job in todo:
            w, r = write_shard(out, split, job, split_scan.sources, _counting(results, bar),
                               sums)
            written, rejected = written + w, rejected + r
    return written, rejected


def _counting(results: Iterator, bar: tqdm) -> Iterator:
    for result in results:
        bar.update(1)
        yield result


def preprocess(src: str | Path, out: str | Path, config: PreprocessConfig,
               split: str | None = None, val_labels: str | Path | None = None,
               progress: bool = True, layout: str | None = None,
               class_names: str | Path | None = None,
               notify: Callable[[str], None] = print_note) -> dict | None:
    """Build shards for every split; returns the manifest when all shards are now complete."""
    src, out = Path(src), Path(out)
    known = known_classes(out)
    options = layouts.ReadOptions(split, None if val_labels is None else Path(val_labels),
                                  None if class_names is None else Path(class_names), known,
                                  resolve_workers(config.workers), progress)
    detected = layout or layouts.detect_layout(src, split)
    notify(f"layout: {detected} (" + ("--layout)" if layout else f"detected from {src}; --layout "
                                                      "NAME overrides)"))
    dataset = layouts.read_dataset(src, detected, options)
    plans = checked_plans(out, dataset, known, config)
    for note in dataset.notes:
        notify(f"note: {note}")
    for warning in dataset.warnings:
        notify(f"warning: {warning}")
    with outdir.explain_os_errors(RERUN, out):
        outdir.remove_dead_temps(out)
        for name, split_scan in dataset.splits.items():
            with rc.lock_part(out, name, config.part):  # no other live writer of these shards
                build_split(out, name, split_scan, plans[name], config, progress)
        if config.part[1] > 1 and not rc.all_shards_done(out):
            return None  # other parts are still running; the last one (or merge-manifest) does it
        return write_outputs(out, config.pca, notify)


def write_outputs(out: Path, pca: bool, notify: Callable[[str], None] = print_note) -> dict:
    """manifest.json, and with `pca` pca.json + mean_image.npy from the train shards' pixel
    sums (what `pca-stats OUT` would compute); returns the manifest."""
    manifest = mf.write_manifest(out)
    if pca and PCA_SPLIT in manifest["splits"]:
        said = pc.pca_from_records(out)
        if said:
            notify(said)
    return manifest


def summary(out: str | Path, manifest: dict | None) -> str:
    """found = written + rejected per split, or a note that other parts are still running."""
    if manifest is None:
        return (f"this part is done; other parts are unfinished. When all are done: "
                f"alexnet-dali merge-manifest {out}")
    lines = [f"wrote {Path(out) / mf.MANIFEST_NAME} ({len(manifest['classes'])} classes)"]
    for name, entry in manifest["splits"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in entry["reject_reasons"].items())
        lines.append(f"{name}: found {entry['found']} = written {entry['written']} + rejected "
                     f"{entry['rejected']}" + (f" ({reasons}; see {entry['rejects_file']})"
                                               if entry["rejected"] else "")
                     + f" in {len(entry['shards'])} shards")
    return "\n".join(lines)
