"""`alexnet-dali bench pipeline`: the DALI train pipeline vs a torch DataLoader + Pillow reference.

Both read the same tar shards and do the same work per image: decode, random 224 crop, flip with
p=0.5, PCA colour noise, mean subtraction, cast to the output dtype, NCHW batches. The reference
uses `num_workers` = the DALI thread count.
"""

from __future__ import annotations

import os
import statistics
import tarfile
import time
from pathlib import Path
from typing import Callable, Iterator

import click
import numpy as np

COMMANDS: list = []
BENCH_COMMANDS: list = []


def tar_index(tars: tuple[str, ...]) -> list[tuple[int, int, int, int]]:
    """(shard number, data offset, size, label) of every `.jpg` member, in shard order."""
    items = []
    for t, path in enumerate(tars):
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, m in members.items():
                if name.endswith(".jpg"):
                    label = int(tar.extractfile(members[name[:-4] + ".cls"]).read())
                    items.append((t, m.offset_data, m.size, label))
    return items


class PillowReference:
    """Map-style torch Dataset: tar bytes → Pillow decode → crop/flip/PCA/normalise (NumPy)."""

    def __init__(self, tars: tuple[str, ...], stats, crop: int, dtype: str,
                 pca_scale: str = "eigenvalue") -> None:
        from alexnet_dali.pipelines.spec import pca_matrix

        self.tars, self.items, self.crop, self.dtype = tars, tar_index(tars), crop, dtype
        self.matrix = pca_matrix(stats, pca_scale)
        self.mean = np.asarray(stats.mean, dtype=np.float32)
        self._files: dict[int, object] = {}
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        """→ (CHW tensor of `dtype`, int label), with the paper's training augmentation."""
        import io

        import torch
        from PIL import Image

        if self._rng is None:  # one generator per DataLoader worker
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng(info.seed if info else 0)
        t, offset, size, label = self.items[i]
        f = self._files.get(t) or self._files.setdefault(t, open(self.tars[t], "rb"))
        f.seek(offset)
        img = np.asarray(Image.open(io.BytesIO(f.read(size))).convert("RGB"))
        span = img.shape[0] - self.crop
        x, y = self._rng.integers(0, span + 1, size=2)
        img = img[y:y + self.crop, x:x + self.crop]
        if self._rng.random() < 0.5:
            img = img[:, ::-1]
        shift = self.matrix @ self._rng.normal(0.0, 0.1, 3).astype(np.float32)
        out = img.astype(np.float32) - (self.mean - shift)
        tensor = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
        return tensor.to(getattr(torch, self.dtype)), label


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
            reps: int, sync: Callable[[], None]) -> dict[str, list[float]]:
    """Images/s per stream over `reps` rounds that give each stream a turn.

    `streams`: name → (batches, batches it holds in flight). A turn pulls `warmup` + in-flight
    untimed batches (draining the queue it refilled while idle), times `count` batches, then
    waits as long as refilling its queue takes at the measured rate, so that no stream works in
    the background of another's timed window. Interleaving the rounds lets both see the same
    background load on a shared machine.
    """
    rates: dict[str, list[float]] = {name: [] for name in streams}
    for _ in range(reps):
        for name, (batches, in_flight) in streams.items():
            time_batches(batches, warmup + in_flight, sync)
            rate = count * batch_size / time_batches(batches, count, sync)
            rates[name].append(rate)
            time.sleep(1.5 * in_flight * batch_size / rate)
    return rates


def bench_data(data: str | None, workdir: Path, images: int, workers: int) -> Path:
    """`data` if given, else a sample-data → preprocess → pca-stats folder (kept in workdir)."""
    if data:
        return Path(data)
    from alexnet_dali.tools.pca import pca_stats
    from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess
    from alexnet_dali.tools.sample_data import SampleDataConfig, write_sample_data

    out = workdir / f"shards-{images}"
    if not (out / "pca.json").is_file():
        click.echo(f"making a {images}-image bench dataset in {workdir} (kept for next time)")
        raw = workdir / f"raw-{images}"
        write_sample_data(raw, SampleDataConfig(classes=8, train_per_class=-(-images // 8),
                                                val_per_class=2, seed=0))
        preprocess(raw, out, PreprocessConfig(shard_size=512, workers=workers))
        pca_stats(out, workers=workers)
    return out


def table(rows: list[tuple[str, list[float]]]) -> str:
    """Markdown table: median, min and max images/s per pipeline."""
    lines = ["| pipeline | median img/s | min | max | reps |", "|---|---:|---:|---:|---:|"]
    for name, rates in rows:
        lines.append(f"| {name} | {statistics.median(rates):,.0f} | {min(rates):,.0f} | "
                     f"{max(rates):,.0f} | {len(rates)} |")
    return "\n".join(lines)


@click.command("pipeline")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Shard folder (manifest.json, pca.json); default: generate one in --workdir.")
@click.option("--workdir", type=click.Path(file_okay=False), default="/tmp/alexnet-dali-bench",
              show_default=True, help="Where the generated bench dataset is kept.")
@click.option("--images", default=2048, show_default=True, help="Size of the generated dataset.")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--threads", default=2, show_default=True,
              help="DALI CPU threads = DataLoader workers.")
@click.option("--decoder", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="gpu: nvJPEG/hardware decode (device='mixed') and GPU augmentation.")
@click.option("--hw-decoder-load", default=0.65, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]),
              default="float32", show_default=True)
@click.option("--prefetch", default=2, show_default=True,
              help="DALI prefetch queue depth = DataLoader prefetch_factor.")
@click.option("--warmup", default=2, show_default=True,
              help="Untimed batches per turn, on top of the batches a pipeline holds in flight.")
@click.option("--batches", default=10, show_default=True, help="Batches per repetition.")
@click.option("--reps", default=5, show_default=True)
@click.option("--skip-reference", is_flag=True, help="Time only the DALI pipeline.")
def bench_pipeline(data, workdir, images, batch_size, threads, decoder, hw_decoder_load, dtype,
                   prefetch, warmup, batches, reps, skip_reference) -> None:
    """Images/s of the DALI train pipeline vs a DataLoader + Pillow doing the same work.

    \b
    Example (2 CPU cores, generated 2048-image dataset):
      alexnet-dali bench pipeline --threads 2 --batch-size 64 --batches 8 --reps 5
    \b
    On a GPU machine, nvJPEG + hardware decoder:
      alexnet-dali bench pipeline --data shards/ --decoder gpu --threads 16 --batch-size 256
    """
    import torch

    from alexnet_dali.config import AugmentConfig, LoaderConfig
    from alexnet_dali.loader import build_train_loader
    from alexnet_dali.pipelines.spec import load_colour_stats, load_shard_set

    root = bench_data(data, Path(workdir), images, threads)
    device = torch.device("cuda", 0) if decoder == "gpu" else torch.device("cpu")
    sync = torch.cuda.synchronize if decoder == "gpu" else (lambda: None)
    shards = load_shard_set(root, "train")
    click.echo(f"data {root}: {shards.samples} train images; batch {batch_size}, {threads} "
               f"threads/workers, decoder {decoder}, dtype {dtype}, prefetch {prefetch}; "
               f"{reps} rounds of {warmup} + in-flight untimed, {batches} timed batches each; "
               f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    streams = {}
    if not skip_reference:  # start the workers first: never fork a process running DALI threads
        reference = PillowReference(shards.tars, load_colour_stats(root), 224, dtype)
        batches_ref = cycle(torch.utils.data.DataLoader(
            reference, batch_size=batch_size, shuffle=True, num_workers=threads,
            prefetch_factor=prefetch, persistent_workers=True, drop_last=True))
        next(batches_ref)
        streams["DataLoader + Pillow"] = (batches_ref, threads * prefetch)
    loader = LoaderConfig(batch_size=batch_size, num_threads=threads, device=decoder,
                          dtype=dtype, prefetch=prefetch, hw_decoder_load=hw_decoder_load)
    dali = build_train_loader(root, loader=loader, augment=AugmentConfig(), rank=0,
                              world_size=1, device=device, seed=0)
    streams = {f"DALI ({decoder})": (cycle(dali), prefetch), **streams}
    rows = list(measure(streams, batch_size, warmup, batches, reps, sync).items())
    click.echo(table(rows))
    click.echo(f"load average after: {os.getloadavg()[0]:.1f}")
    if len(rows) == 2:
        ratio = statistics.median(rows[0][1]) / statistics.median(rows[1][1])
        click.echo(f"DALI / DataLoader (medians): {ratio:.2f}x")


BENCH_COMMANDS.append(bench_pipeline)
