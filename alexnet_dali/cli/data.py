"""CLI commands of the data stage (tools/): sample-data, preprocess, merge-manifest, pca-stats,
verify."""

from __future__ import annotations

from typing import Any, Callable

import click

from alexnet_dali.cli.params import SHARDS
from alexnet_dali.errors import Interrupted, report_user_errors
from alexnet_dali.tools.images import DECODERS, RESIZERS
from alexnet_dali.tools.layouts import LAYOUTS
from alexnet_dali.tools.sample_data import KINDS


def _parse_part(value: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected i/n, e.g. 2/8") from None
    if not 1 <= i <= n:
        raise click.BadParameter(f"{value!r}: parts count from 1 to n (1/{n} ... {n}/{n})")
    return i, n


def listing_layouts(command: Callable[..., Any]) -> Callable[..., Any]:
    """Fill the `{layouts}` line of a command's docstring (its --help) with the input layouts,
    a line each (`tools.layouts.LAYOUTS`)."""
    lines = [f"  {name:<9} {layout.holds}" for name, layout in LAYOUTS.items()]
    command.__doc__ = command.__doc__.replace("{layouts}", "\n    ".join(lines))
    return command


@click.command("sample-data", short_help="Generate a small seeded ImageNet-style dataset.")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", type=click.IntRange(min=1), default=4, show_default=True,
              help="Number of classes.")
@click.option("--train-per-class", type=click.IntRange(min=0), default=64, show_default=True,
              help="Train images per class.")
@click.option("--val-per-class", type=click.IntRange(min=0), default=16, show_default=True,
              help="Val images per class.")
@click.option("--min-side", type=click.IntRange(min=16), default=150, show_default=True,
              help="Smallest image side (px).")
@click.option("--max-side", type=click.IntRange(min=16), default=1000, show_default=True,
              help="Largest image side (px).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed (same seed, same files).")
@click.option("--with-odd-files", is_flag=True,
              help="Add CMYK, grayscale, PNG/GIF/16-bit as .JPEG, RGBA, truncated, empty, text.")
@click.option("--kind", type=click.Choice(KINDS), default="easy", show_default=True,
              help="easy: a colour per class (the demo's); hard: 16 shapes, each image's colour, "
              "rotation, scale and place drawn at random, distractor strokes (bench learn's).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@report_user_errors
def sample_data(out, classes, train_per_class, val_per_class, min_side, max_side, seed,
                with_odd_files, kind, quiet) -> None:
    """Generate a small seeded ImageNet-style dataset (OUT/{train,val}/<class>/*.JPEG).

    \b
    Example:
      alexnet-dali sample-data demo/raw --classes 4 --train-per-class 64 --with-odd-files
    \b
    Harder data (a linear model on its pixels stays near chance; docs/TRAINING.md):
      alexnet-dali sample-data hard/raw --kind hard --classes 16 --train-per-class 80
    """
    from tqdm import tqdm

    from alexnet_dali.tools.sample_data import SampleDataConfig, write_sample_data

    if min_side > max_side:
        raise click.BadParameter(f"{min_side} > --max-side {max_side}: the smallest side cannot "
                                 "exceed the largest", param_hint="--min-side")
    config = SampleDataConfig(classes, train_per_class, val_per_class, min_side, max_side, seed,
                              with_odd_files, kind)
    with tqdm(total=classes * (train_per_class + val_per_class), unit="img",
              desc="sample-data", disable=quiet) as bar:
        counts = write_sample_data(out, config, progress=bar.update)
    click.echo(f"wrote {out}: " + ", ".join(f"{k} {v} files" for k, v in counts.items()))


@click.command("preprocess", short_help="Images -> shuffled 256x256 JPEG tar shards + manifest.")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True,
              help="Output side (shorter side -> size, "
              "central square).")
@click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True,
              help="JPEG quality of the output.")
@click.option("--draft/--no-draft", default=True, show_default=True,
              help="Decode big JPEGs at 1/2, 1/4 or 1/8 DCT scale while the shorter side stays "
              ">= the size (turbo) or 2x the size (pillow).")
@click.option("--decoder", type=click.Choice(DECODERS), default="turbo",
              show_default=True, help="JPEG decoder/encoder: libjpeg-turbo via simplejpeg, or "
              "Pillow for everything (slower; recorded in the manifest).")
@click.option("--resizer", type=click.Choice(RESIZERS), default="vips",
              show_default=True, help="Lanczos-3 resize: libvips (SIMD, Pillow's sampling grid) "
              "or Pillow (slower; recorded in the manifest).")
@click.option("--max-pixels", default=None, type=click.IntRange(min=1),
              show_default="178956970, Pillow's limit",
              help="Reject images with more pixels (decompression bombs).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Shuffle seed (recorded).")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Samples per shard.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes; 0 = all cores.")
@click.option("--layout", type=click.Choice(list(LAYOUTS)),
              default=None, show_default="detected from SRC's content", help="Input layout.")
@click.option("--split", default=None, show_default="every split SRC holds",
              help="Build only this split (folders: SRC may be the split's folder itself).")
@click.option("--val-labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Labels of a flat val folder: '<file> <class>' lines (LOC_val_solution.csv) "
              "or one class a line (imagenet_2012_validation_synset_labels.txt).")
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False), default=None,
              help="'<wnid> <words>' lines (LOC_synset_mapping.txt): class words; for hf also "
              "the class list.")
@click.option("--part", default="1/1", show_default=True, help="Build share i of n of the shards.")
@click.option("--pca/--no-pca", default=True, show_default=True,
              help="Sum the train pixels as they are written and write pca.json + "
              "mean_image.npy at the end (what pca-stats computes, without a second pass).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@report_user_errors
@listing_layouts
def preprocess(src, out, size, quality, draft, decoder, resizer, max_pixels, seed, shard_size,
               workers, layout, split, val_labels, class_names, part, pca, quiet) -> None:
    """Convert images to shuffled 256x256 JPEG tar shards + DALI indexes + manifest.json.

    \b
    SRC layouts (detected; --layout overrides):
    {layouts}
    \b
    Examples:
      alexnet-dali preprocess demo/raw demo/shards
      alexnet-dali preprocess /data/ILSVRC2012 /data/shards          # the official tars
      alexnet-dali preprocess /data/ILSVRC2012 /data/shards --split train --part 3/8
      alexnet-dali preprocess /data/ILSVRC/val /data/shards --split val --val-labels val.txt
    Re-running resumes: finished shards are kept. With --part, the last part to finish (or
    `alexnet-dali merge-manifest OUT`) writes the manifest, and pca.json.
    """
    from alexnet_dali.errors import DataError
    from alexnet_dali.tools.images import DEFAULT_MAX_PIXELS, ImageSettings
    from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess as run, summary
    from alexnet_dali.tools.storage import is_remote

    if is_remote(out):
        raise DataError(f"{out}: preprocess writes to a local folder; preprocess into one, then "
                        f"upload it: `aws s3 sync SHARDS {out}` (docs/DATA.md)")
    image = ImageSettings(size, quality, draft, max_pixels or DEFAULT_MAX_PIXELS, decoder,
                          resizer)
    config = PreprocessConfig(image, seed, shard_size, workers, _parse_part(part), pca)
    try:
        manifest = run(src, out, config, split=split, val_labels=val_labels,
                       progress=not quiet, layout=layout, class_names=class_names)
    except KeyboardInterrupt:
        raise Interrupted(f"finished shards in {out} are kept; run the same command again to "
                          "resume") from None
    click.echo(summary(out, manifest))


@click.command("merge-manifest", short_help="Write the manifest from finished --part runs.")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@report_user_errors
def merge_manifest(out) -> None:
    """Write OUT/manifest.json (and pca.json, from the parts' pixel sums) from the shards that
    `preprocess --part i/n` runs built.

    \b
    Example:
      alexnet-dali merge-manifest /data/shards
    """
    from pathlib import Path

    from alexnet_dali.tools.outdir import explain_os_errors
    from alexnet_dali.tools.preprocess import summary, write_outputs

    with explain_os_errors("run merge-manifest again", out):
        manifest = write_outputs(Path(out), pca=True)
    click.echo(summary(out, manifest))


@click.command("pca-stats", short_help="RGB mean/std/covariance/PCA of the train shards.")
@click.argument("out", type=SHARDS)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes; 0 = all cores.")
@click.option("--max-images", type=click.IntRange(min=1), default=None, show_default="all",
              help="Use only this many train images.")
@click.option("--mean-image/--no-mean-image", default=True, show_default=True,
              help="Also save the 256x256x3 mean image (mean_image.npy).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@report_user_errors
def pca_stats(out, workers, max_images, mean_image, quiet) -> None:
    """Per-channel mean/std, RGB covariance and its eigenvectors of the train shards -> pca.json.

    \b
    Examples:
      alexnet-dali pca-stats demo/shards --workers 8
      alexnet-dali pca-stats s3://my-bucket/imagenet-shards   # writes pca.json there
    preprocess already writes pca.json (its --pca, on by default): this is for shards made
    without it.
    """
    from alexnet_dali.tools.pca import pca_stats as run, summary
    from alexnet_dali.tools.preprocess import resolve_workers

    result = run(out, resolve_workers(workers), max_images, mean_image, progress=not quiet)
    click.echo(f"wrote {out}/pca.json")
    click.echo(summary(result))


@click.command("verify", short_help="Check every shard against manifest.json (after a copy).")
@click.argument("out", type=SHARDS)
@click.option("--decode", is_flag=True,
              help="Also decode every JPEG strictly (a libjpeg warning is an error) and check "
              "every label.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes; 0 = all cores.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@report_user_errors
def verify(out, decode, workers, quiet) -> None:
    """Check the shards of OUT: size and sha256 as manifest.json records them, every .idx against
    its tar, sample counts; with --decode, every sample decoded strictly.

    \b
    Examples:
      alexnet-dali verify /data/shards              # after copying shards to another machine
      alexnet-dali verify /data/shards --decode --workers 16
      alexnet-dali verify s3://my-bucket/imagenet-shards   # after `aws s3 sync`
    Exit status 0 when all is well, 1 with every bad shard and sample listed.
    """
    from alexnet_dali.tools.preprocess import resolve_workers
    from alexnet_dali.tools.verify import summary, verify as run

    checks, problems = run(out, decode, resolve_workers(workers), progress=not quiet)
    click.echo(summary(out, checks, problems), err=bool(problems))
    if problems:
        raise SystemExit(1)


COMMANDS: list = [sample_data, preprocess, merge_manifest, pca_stats, verify]
