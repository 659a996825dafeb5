"""CLI command of the pipeline stage: `bench pipeline` (the benchmark is `bench_pipeline.py`)."""

from __future__ import annotations

import click

from alexnet_dali.errors import report_user_errors

COMMANDS: list = []
BENCH_COMMANDS: list = []


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
@report_user_errors
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
    from alexnet_dali.bench_pipeline import run_bench

    run_bench(data, workdir=workdir, images=images, batch_size=batch_size, threads=threads,
              decoder=decoder, hw_decoder_load=hw_decoder_load, dtype=dtype, prefetch=prefetch,
              warmup=warmup, batches=batches, reps=reps, skip_reference=skip_reference)


BENCH_COMMANDS.append(bench_pipeline)
