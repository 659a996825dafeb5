"""CLI commands of the pipeline stage: `bench pipeline`, `bench colour-noise` (bench_*.py)."""

from __future__ import annotations

import click

from alexnet_dali.config.fields import choices
from alexnet_dali.config.schema import LoaderConfig
from alexnet_dali.errors import report_user_errors

COMMANDS: list = []
BENCH_COMMANDS: list = []


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


BENCH_COMMANDS.append(bench_pipeline)


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


BENCH_COMMANDS.append(bench_colour_noise)
