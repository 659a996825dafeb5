"""The `bench` group: benchmarks that print measurements, one per stage (preprocess and pca-stats
of tools/, the DALI pipeline and its colour noise, training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from alexnet_dali.cli.params import DEVICES, SHARDS
from alexnet_dali.config.fields import choices
from alexnet_dali.config.schema import LoaderConfig, TrainConfig
from alexnet_dali.errors import report_user_errors


@click.group()
def bench() -> None:
    """Benchmarks that print measurements: speed, and whether a recipe learns.

    preprocess, pca-stats, pipeline, colour-noise, train: speed; init, learn: learning."""


@click.command("preprocess", short_help="Preprocess speed and quality: Pillow vs libjpeg-turbo "
               "and libvips, folders vs official tar.")
@click.option("--small", type=click.IntRange(min=0), default=40, show_default=True,
              help="Images of ~500x375.")
@click.option("--large", type=click.IntRange(min=0), default=20, show_default=True,
              help="Images of ~2000x1500.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="preprocess worker processes.")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True,
              help="Timed runs per setting (best).")
@report_user_errors
def bench_preprocess(small, large, workers, repeats) -> None:
    """Time preprocess on generated photo-sized JPEGs: the Pillow path (the code before
    libjpeg-turbo and libvips), libjpeg-turbo with Pillow's resize, libjpeg-turbo with libvips'
    resize (the default) on the same folder and reading an official-style train tar; PSNR
    against a full-resolution decode + Lanczos reference.

    \b
    Example:
      alexnet-dali bench preprocess --small 40 --large 20 --workers 1
    """
    from alexnet_dali.tools.bench import format_table, run_bench

    rows = run_bench((small, large), workers, repeats)
    click.echo(format_table(rows, workers))


@click.command("pca-stats", short_help="pca-stats img/s vs the decode floor, same shards.")
@click.argument("data", type=SHARDS, required=False)
@click.option("--workdir", type=click.Path(file_okay=False), default="/tmp/alexnet-dali-bench",
              show_default=True, help="Where the generated bench dataset is kept (no DATA).")
@click.option("--images", type=click.IntRange(min=8), default=2048, show_default=True,
              help="Size of the generated dataset (no DATA).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes, for both passes.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed rounds, each pass once.")
@report_user_errors
def bench_pca_stats(data, workdir, images, workers, repeats) -> None:
    """Images/s of pca-stats against the decode floor (read the train shards and decode every
    JPEG, nothing else), taking turns on one worker pool.

    \b
    Example:
      alexnet-dali bench pca-stats demo/shards --workers 2 --repeats 3
    """
    from pathlib import Path

    from alexnet_dali.bench.pipeline import bench_data
    from alexnet_dali.tools.bench_pca import run_bench

    run_bench(data or str(bench_data(None, Path(workdir), images, workers)), workers, repeats)


@click.command("pipeline")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              show_default="generate one in --workdir",
              help="Shard folder (manifest.json, pca.json).")
@click.option("--workdir", type=click.Path(file_okay=False), default="/tmp/alexnet-dali-bench",
              show_default=True, help="Where the generated bench dataset is kept.")
@click.option("--images", type=click.IntRange(min=8), default=2048, show_default=True,
              help="Size of the generated dataset.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Images per batch.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="DALI CPU threads = DataLoader workers.")
@click.option("--decoder", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="gpu: nvJPEG/hardware decode (device='mixed') and GPU augmentation.")
@click.option("--hw-decoder-load", type=click.FloatRange(0, 1), default=0.65, show_default=True,
              help="With --decoder gpu: share of JPEGs for the A100/H100 hardware decoder.")
@click.option("--dtype", type=click.Choice(choices(LoaderConfig, "dtype")),
              default="float32", show_default=True, help="Element type of the output batches.")
@click.option("--prefetch", type=click.IntRange(min=1), default=2, show_default=True,
              help="DALI prefetch queue depth = DataLoader prefetch_factor.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed batches per turn, on top of the batches a pipeline holds in flight.")
@click.option("--batches", type=click.IntRange(min=1), default=10, show_default=True,
              help="Batches per repetition.")
@click.option("--reps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Rounds, each timing every pipeline in turn.")
@click.option("--skip-reference", is_flag=True, help="Leave out the DataLoader + Pillow row.")
@click.option("--baseline", is_flag=True,
              help="Add the minimal DALI graph (read, decode, random crop/mirror, fixed mean).")
@click.option("--shard-check", is_flag=True,
              help="Add the train loader with the damaged-sample check (sha256 of every shard), "
                   "re-run every epoch: what a run's first epoch pays.")
@click.option("--remote", metavar="s3://BUCKET/PREFIX", default=None,
              help="The same shards in object storage: add the train loader reading them from "
              "there, and its ratio to the local one.")
@report_user_errors
def bench_pipeline(data, workdir, images, batch_size, threads, decoder, hw_decoder_load, dtype,
                   prefetch, warmup, batches, reps, skip_reference, baseline, shard_check,
                   remote) -> None:
    """Images/s of the DALI train pipeline vs a DataLoader + Pillow doing the same work.

    \b
    Example (2 CPU cores, generated 2048-image dataset):
      alexnet-dali bench pipeline --threads 2 --batch-size 64 --batches 8 --reps 5
    \b
    The project's graph vs the minimal one (pipelines/baseline.py), same shards, one run:
      alexnet-dali bench pipeline --baseline --skip-reference --batch-size 128 --reps 7
    \b
    The cost of the damaged-sample check (train/eval hash each shard as first read):
      alexnet-dali bench pipeline --shard-check --skip-reference --batch-size 128 --reps 9
    \b
    Local shards vs the same shards uploaded to S3 (or MinIO: AWS_ENDPOINT_URL), one run:
      alexnet-dali bench pipeline --data shards/ --remote s3://bucket/shards --skip-reference
    \b
    On a GPU machine, nvJPEG + hardware decoder:
      alexnet-dali bench pipeline --data shards/ --decoder gpu --threads 16 --batch-size 256
    """
    from alexnet_dali.bench.pipeline import run_bench

    run_bench(data, workdir=workdir, images=images, batch_size=batch_size, threads=threads,
              decoder=decoder, hw_decoder_load=hw_decoder_load, dtype=dtype, prefetch=prefetch,
              warmup=warmup, batches=batches, reps=reps, skip_reference=skip_reference,
              baseline=baseline, shard_check=shard_check, remote=remote)


@click.command("colour-noise")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              show_default="generate one in --workdir",
              help="Shard folder (manifest.json, pca.json).")
@click.option("--workdir", type=click.Path(file_okay=False), default="/tmp/alexnet-dali-bench",
              show_default=True, help="Where the generated bench dataset is kept.")
@click.option("--images", type=click.IntRange(min=8), default=2048, show_default=True,
              help="Size of the generated dataset.")
@click.option("--stats", type=click.Choice(["imagenet", "data"]), default="imagenet",
              show_default=True, help="imagenet: cuda-convnet2's ImageNet PCA; data: pca.json.")
@click.option("--pca-std", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Standard deviation of the noise's alpha (augment.pca_std).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per batch.")
@click.option("--batches", type=click.IntRange(min=1), default=8, show_default=True,
              help="Batches measured.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="DALI CPU threads.")
@report_user_errors
def bench_colour_noise(data, workdir, images, stats, pca_std, batch_size, batches,
                       threads) -> None:
    """The PCA colour shift's std per channel in the train loader, per pca_scale.

    \b
    Example (ImageNet's colour statistics on the generated dataset):
      alexnet-dali bench colour-noise --batches 8 --batch-size 64
    """
    from pathlib import Path

    from alexnet_dali.bench.colour import run_colour_bench
    from alexnet_dali.bench.pipeline import bench_data

    root = bench_data(data, Path(workdir), images, threads)
    run_colour_bench(root, imagenet=stats == "imagenet", batches=batches, batch_size=batch_size,
                     threads=threads, pca_std=pca_std)


@click.command(
    "train", short_help="Training images/s: synthetic input vs fed by DALI, and the ratio.")
@click.argument("data", required=False)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per step (one process: the global batch, like train's).")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed steps per source.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed steps per source first.")
@click.option("--device", type=DEVICES, default="auto",
              show_default=True, help="auto: cuda when available, else cpu.")
@click.option("--precision", type=click.Choice(choices(TrainConfig, "precision")), default="auto",
              show_default=True, help="auto: bf16 autocast on a GPU, fp32 on a CPU.")
@click.option("--workers", type=click.IntRange(min=1), default=TrainConfig().loader.num_threads,
              show_default=True, help="DALI CPU threads.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads; 0: torch's default.")
@click.option("--compile", is_flag=True, help="torch.compile the model first.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the numbers to this JSON file.")
@report_user_errors
def bench_train_command(data: str | None, json_path: str | None, **options: Any) -> None:
    """Training images/s on synthetic input vs fed by the DALI pipeline from DATA, and the ratio.

    \b
    Example:
      alexnet-dali bench train demo/shards --batch-size 32 --steps 10
    \b
    A ratio (DALI / synthetic) well below 1 means the pipeline starves the model.
    The two take turns (3 rounds), so both see the same background load.
    Without DATA only the synthetic number is measured.
    """
    from alexnet_dali.bench.train import run_bench

    result = run_bench(data, **options)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")


for command in (bench_preprocess, bench_pca_stats, bench_pipeline, bench_colour_noise,
                bench_train_command):
    bench.add_command(command)
