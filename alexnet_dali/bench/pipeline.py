"""`bench pipeline`: the DALI train pipeline vs a torch DataLoader + Pillow reference
(`pillow.py`), and against the minimal graph, itself with the damaged-sample check, and the same
shards in object storage; the loaders take turns (`timing.py`).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Callable, Iterator

from alexnet_dali.bench.pillow import pillow_stream
from alexnet_dali.bench.timing import cycle, measure, print_ratio, table
from alexnet_dali.errors import ConfigError
from alexnet_dali.loader.data import ShardData, open_shards


def bench_data(data: str | None, workdir: Path, images: int, workers: int) -> Path:
    """`data` if given, else a sample-data → preprocess → pca-stats folder (kept in workdir)."""
    if data:
        return Path(data)
    from alexnet_dali.tools.pca import PCA_NAME, pca_stats
    from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess
    from alexnet_dali.tools.sample_data import SampleDataConfig, write_sample_data

    out = workdir / f"shards-{images}"
    if not (out / PCA_NAME).is_file():
        print(f"making a {images}-image bench dataset in {workdir} (kept for next time)")
        raw = workdir / f"raw-{images}"
        write_sample_data(raw, SampleDataConfig(classes=8, train_per_class=-(-images // 8),
                                                val_per_class=2, seed=0))
        preprocess(raw, out, PreprocessConfig(shard_size=512, workers=workers))  # + pca.json
        if not (out / PCA_NAME).is_file():
            pca_stats(out, workers=workers)
    return out


def baseline_batches(root: Path, loader, batch_size: int, device, seed: int = 0) -> Iterator:
    """Batches of the minimal graph (`pipelines/baseline.py`), handed to torch as the loader does:
    (images, the untouched `.cls` digit TensorList)."""
    from alexnet_dali.config.schema import AugmentConfig
    from alexnet_dali.loader.pipeline import pipeline_args, pipeline_spec
    from alexnet_dali.loader.handoff import images_to_torch
    from alexnet_dali.pipelines.baseline import baseline_pipeline

    spec = pipeline_spec(root, "train", loader=loader, augment=AugmentConfig(), rank=0,
                         world_size=1, device=device)
    pipe = baseline_pipeline(spec, **pipeline_args(spec, loader, batch_size, device, seed))
    pipe.build()
    while True:
        images, digits = pipe.run()
        yield images_to_torch(images, loader, device), digits


def checked_batches(loader, root: Path | ShardData, hashing: list[float]) -> Iterator:
    """The train loader's batches with the damaged-sample check (loader/integrity.py) on, a
    fresh shard watcher every epoch: every epoch pays what a run's first epoch pays (hashing
    every shard of the rank, and the gate's per-batch look-up until the hashes are in).
    `hashing` gets each finished epoch's watcher-thread CPU seconds."""
    from alexnet_dali.loader.integrity import build_gate

    while True:
        loader.gate = build_gate(open_shards(root).manifest, "train", 0, 1, True, "stop")
        yield from loader
        loader.gate.watcher.wait_all()
        hashing.append(loader.gate.watcher.cpu_seconds)


def print_check_cost(cpu_ms: dict[str, list[float]], project: str, checked: str,
                     hashing: list[float], samples: int, batch_size: int) -> None:
    """The damaged-sample check's CPU: per batch against the loader's (process time, all
    threads), and the hashing thread's own per epoch and per image."""
    cost = statistics.median(cpu_ms[checked]) / statistics.median(cpu_ms[project])
    print(f"{checked} / {project} (CPU ms per batch, medians): {cost:.3f}x")
    if hashing:
        epoch = statistics.median(hashing)
        loader_per_image = statistics.median(cpu_ms[project]) / batch_size
        per_image = epoch / samples * 1e3
        print(f"hashing thread: {epoch * 1e3:.0f} ms CPU per epoch ({len(hashing)} epochs, "
              f"median) = {per_image * 1e3:.1f} us per image = {per_image / loader_per_image:.1%} "
              f"of the loader's {loader_per_image:.2f} ms CPU per image")


def remote_stream(root: Path | ShardData, remote: str,
                  build) -> tuple[str, Callable[[], Iterator]]:
    """(row name, batches) of the train loader on `remote`, the same shards as `root` in object
    storage (refused when its manifest is another)."""
    from alexnet_dali.tools.manifest import read_manifest

    mine, theirs = open_shards(root).manifest, read_manifest(remote)
    if mine.sha256 != theirs.sha256:
        raise ConfigError(f"--remote {remote}: its manifest.json differs from {mine.path}'s; "
                          "upload the same shard folder (`aws s3 sync`) to compare them")
    return f"DALI from {remote}", cycle(build(remote))


def bytes_per_image(root: Path | ShardData) -> float:
    """Mean bytes a train sample takes in the shards (tar headers and padding included)."""
    split = open_shards(root).manifest.split("train")
    return sum(s.size or 0 for s in split.shards) / max(1, split.samples)


def run_bench(data: str | None, *, workdir: str, images: int, batch_size: int, threads: int,
              decoder: str, hw_decoder_load: float, dtype: str, prefetch: int, warmup: int,
              batches: int, reps: int, skip_reference: bool,
              baseline: bool = False, shard_check: bool = False,
              remote: str | None = None) -> dict[str, list[float]]:
    """Time the DALI train loader (and the baseline graph, the reference; with `shard_check` the
    loader again with the damaged-sample check re-run every epoch; the same loader on `remote`
    shards) per `measure`; print and return the rates."""
    import torch

    from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
    from alexnet_dali.loader.train import build_train_loader

    if decoder == "gpu" and not torch.cuda.is_available():
        raise ConfigError("--decoder gpu: CUDA is not available on this machine; use "
                          "--decoder cpu")
    root = bench_data(data, Path(workdir), images, threads)
    local = open_shards(root)  # read once: every loader below and the reference use it
    device = torch.device("cuda", 0) if decoder == "gpu" else torch.device("cpu")
    sync = torch.cuda.synchronize if decoder == "gpu" else (lambda: None)
    shards = local.shard_set("train")
    print(f"data {root}: {shards.samples} train images; batch {batch_size}, {threads} "
          f"threads/workers, decoder {decoder}, dtype {dtype}, prefetch {prefetch}; "
          f"{reps} rounds of {warmup} + in-flight untimed, {batches} timed batches each; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    streams = {}
    if not skip_reference:  # start the workers first: never fork a process running DALI threads
        streams["DataLoader + Pillow"] = pillow_stream(
            shards, local.colour_stats(), batch_size=batch_size, threads=threads,
            prefetch=prefetch, dtype=dtype)
    loader = LoaderConfig(num_threads=threads, device=decoder, dtype=dtype, prefetch=prefetch,
                          hw_decoder_load=hw_decoder_load, shard_check="off")

    def build(where):
        return build_train_loader(where, loader=loader, augment=AugmentConfig(),
                                  batch_size=batch_size, rank=0, world_size=1, device=device,
                                  seed=0)

    rows = Rows(decoder)
    first = {rows.project: (cycle(build(local)), prefetch)}
    if baseline:
        first[rows.minimal] = (baseline_batches(local, loader, batch_size, device), prefetch)
    hashing: list[float] = []
    if shard_check:
        first[rows.checked] = (checked_batches(build(local), local, hashing), prefetch)
    if remote:
        rows.remote, batches_remote = remote_stream(local, remote, build)
        first[rows.remote] = (batches_remote, prefetch)
    cpu_ms: dict[str, list[float]] = {}
    rates = measure({**first, **streams}, batch_size, warmup, batches, reps, sync, cpu_ms)
    print(table(list(rates.items()), cpu_ms, tuple(first)))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print_comparisons(rates, cpu_ms, rows, hashing, local, batch_size, remote)
    return rates


class Rows:
    """The names of the table's rows of the project's loaders."""

    def __init__(self, decoder: str) -> None:
        self.project, self.minimal = f"DALI ({decoder})", f"DALI baseline ({decoder})"
        self.checked = f"DALI ({decoder}) + shard check"
        self.remote = ""  # "DALI from s3://...", when measured


def print_comparisons(rates: dict[str, list[float]], cpu_ms: dict[str, list[float]], rows: Rows,
                      hashing: list[float], local: ShardData, batch_size: int,
                      remote: str | None) -> None:
    """The ratios below the table: project vs baseline, the shard check's cost, vs the Pillow
    reference, remote vs local shards (each where both were measured)."""
    project, minimal, checked = rows.project, rows.minimal, rows.checked
    print_ratio(rates, project, minimal)
    print_ratio(rates, checked, project)
    if checked in rates:
        print_check_cost(cpu_ms, project, checked, hashing, local.shard_set("train").samples,
                         batch_size)
    if minimal in rates:  # images per CPU second, project / minimal: the load-independent side
        cost = statistics.median(cpu_ms[minimal]) / statistics.median(cpu_ms[project])
        print(f"{project} / {minimal} (images per CPU second, medians): {cost:.2f}x")
    print_ratio(rates, project, "DataLoader + Pillow")
    if remote:
        print_ratio(rates, rows.remote, project)
        per_image = bytes_per_image(local)
        rate = statistics.median(rates[rows.remote])
        print(f"{per_image / 1024:.1f} KiB per train image in the shards: {rate:,.0f} img/s "
              f"from {remote} read {per_image * rate * 8 / 1e9:.3f} Gb/s")
