"""CLI commands that use a trained (or imported) model: `eval`, `figures`, `predict`, `export`,
`import-weights`."""

from __future__ import annotations

import sys

import click

from alexnet_dali.cli.params import DEVICES, device_of
from alexnet_dali.errors import DataError, report_user_errors
from alexnet_dali.tools.outdir import explain_os_errors
from alexnet_dali.use.figures import make_figures  # matplotlib is imported inside it


def old_spellings(name: str) -> str:
    """eval's option names as typed before: --batch-size (a per-rank count) is --batch-per-rank."""
    return "batch-per-rank" if name == "batch-size" else name


@click.command(
    "eval", short_help="Top-1/top-5 error of a checkpoint on the val split (center or ten-crop).",
    context_settings={"token_normalize_func": old_spellings})
@click.argument("data")
@click.option("--checkpoint", "ckpt", required=True,
              help="A ckpt-*.pt file, or a run dir (its newest checkpoint).")
@click.option("--tencrop", is_flag=True, help="Average the softmax of the 10 views.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the results to this JSON file.")
@click.option("--split", default="val", show_default=True, help="Which split of DATA to score.")
@click.option("--batch-per-rank", "batch_size", type=click.IntRange(min=1), default=64,
              show_default=True, help="Images per batch on each rank (each rank scores its "
              "share; train's --batch-size is the global batch, all ranks together).")
@click.option("--device", type=DEVICES, default="auto",
              show_default=True, help="auto: cuda when available, else cpu.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              show_default="the checkpoint's", help="DALI CPU threads per rank.")
@click.option("--per-class", is_flag=True,
              help="Also accuracy and samples per class (names), worst first; in --json too.")
@click.option("--skip-bad-samples", is_flag=True,
              help="Leave damaged samples out (counted) instead of stopping with an error.")
@report_user_errors
def eval_command(data: str, ckpt: str, tencrop: bool, json_path: str | None, split: str,
                 batch_size: int, device: str, workers: int | None, per_class: bool,
                 skip_bad_samples: bool) -> None:
    """Top-1/top-5 error of a checkpoint over the whole split of DATA (center or ten-crop).

    \b
    Examples:
      alexnet-dali eval demo/shards --checkpoint runs/demo --tencrop --json runs/demo/eval.json
      torchrun --nproc-per-node 2 $(which alexnet-dali) eval shards/ --checkpoint CKPT
    \b
    The model is rebuilt from the checkpoint's own config; each sample is counted once.
    Each shard's sha256 is checked as it is read; a damaged sample stops eval with an error
    naming the shard and key (--skip-bad-samples: left out and counted).
    """
    from alexnet_dali.loader.data import require_data
    from alexnet_dali.use.evaluate import evaluate_checkpoint

    require_data(data, "eval")
    evaluate_checkpoint(data, ckpt, tencrop=tencrop, json_path=json_path, split=split,
                        batch_size=batch_size, device=device, workers=workers,
                        per_class=per_class, skip_bad_samples=skip_bad_samples)


@click.command(
    "figures",
    short_help="Training curves, conv1 filter grid (Fig. 3), fc7 neighbours (Fig. 4).")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False),
              show_default="the run's own data",
              help="Shard folder for the fc7 neighbours.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), show_default="RUN/figures",
              help="Where the PNGs go.")
@click.option("--queries", default=5, show_default=True, type=click.IntRange(min=1),
              help="Val images in the neighbours figure (one a row).")
@click.option("--neighbours", default=6, show_default=True, type=click.IntRange(min=1),
              help="Train neighbours per val image.")
@click.option("--train-images", default=1024, show_default=True, type=click.IntRange(min=1),
              help="How many train images (from the start of the split) to search.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@report_user_errors
def figures_command(run_dir: str, data_dir: str | None, out_dir: str | None, queries: int,
                    neighbours: int, train_images: int, quiet: bool) -> None:
    """Training curves, conv1 filters (Fig. 3) and fc7 nearest neighbours (Fig. 4) of a run.

    \b
    Example:
      alexnet-dali figures runs/demo --data demo/shards
      # -> runs/demo/figures/{curves,conv1_filters,fc7_neighbours}.png
    """
    make_figures(run_dir, data_dir, out_dir, queries=queries, neighbours=neighbours,
                 train_images=train_images, progress=not quiet, log=click.echo)


@click.command("predict", short_help="Classify image files or folders with a checkpoint.")
@click.argument("inputs", nargs=-1, required=True, metavar="FILES_OR_DIRS...")
@click.option("--checkpoint", "ckpt", required=True, help="ckpt-*.pt file or a run dir (newest).")
@click.option("--tencrop", is_flag=True, help="Average the softmax of the 10 eval views.")
@click.option("--topk", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classes listed per image, most probable first.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write a list, one object per file in input order.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per batch.")
@click.option("--device", type=DEVICES, default="auto", show_default=True,
              help="auto: cuda when available, else cpu.")
@click.option("--data", default=None, show_default="the checkpoint's, if still there",
              help="Shard folder for class names, image settings and (old checkpoints) pca.json.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@report_user_errors
def predict_command(inputs: tuple[str, ...], ckpt: str, tencrop: bool, topk: int,
                    json_path: str | None, batch_size: int, device: str, data: str | None,
                    quiet: bool) -> None:
    """Classify images: FILES_OR_DIRS (folders walked in sorted order, hidden files skipped).

    \b
    Examples:
      alexnet-dali predict photo.jpg holidays/ --checkpoint runs/demo
      alexnet-dali predict val/ --checkpoint runs/tv --tencrop --topk 5 --json preds.json
    \b
    Each image is converted exactly as `preprocess` converts it (shorter side 256, central
    256x256, Lanczos, JPEG quality 90), then the eval view (center 224, or the ten views with
    --tencrop) is normalised as in training. --json entries: {"file", "top": [{"class_id",
    "class", "wnid", "prob"}, ...]} or {"file", "error"} ("class": the words, else the WNID).
    An unreadable file gets an ERROR row saying why and is skipped; the exit status is then 1.
    """
    from alexnet_dali.use.inference import load_for_inference
    from alexnet_dali.use.predict import (
        format_predictions,
        gather_files,
        predict_files,
        write_predictions,
    )

    inference = load_for_inference(ckpt, data)
    files = gather_files(inputs)
    if not files:
        raise DataError(f"{', '.join(inputs)}: no files found; name image files or folders")
    results = predict_files(inference, files, tencrop=tencrop, topk=topk,
                            batch_size=batch_size, device=device_of(device), progress=not quiet)
    click.echo(format_predictions(results))
    if json_path:
        with explain_os_errors("run predict again", json_path):
            write_predictions(results, json_path)
    failed = [r for r in results if r.error]
    if failed:  # each has its ERROR row above
        click.echo(f"{len(failed)} of {len(results)} files could not be read (the ERROR rows)",
                   err=True)
        sys.exit(1)


@click.command("export", short_help="A checkpoint as a TorchScript or ONNX module (+ OUT.json).")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--checkpoint", "ckpt", required=True, help="ckpt-*.pt file or a run dir (newest).")
@click.option("--format", "fmt", type=click.Choice(["torchscript", "onnx"]), default="torchscript",
              show_default=True,
              help="torchscript: OUT for torch.jit.load (or libtorch); onnx: an ONNX graph.")
@click.option("--data", default=None, show_default="the checkpoint's, if still there",
              help="Shard folder for class names and (old checkpoints) pca.json.")
@report_user_errors
def export_command(out: str, ckpt: str, fmt: str, data: str | None) -> None:
    """Write the checkpoint as a self-contained inference module OUT, and OUT.json beside it.

    \b
    Examples:
      alexnet-dali export runs/demo/alexnet.pt --checkpoint runs/demo
      alexnet-dali export runs/tv/alexnet.onnx --checkpoint runs/tv --format onnx
    \b
    Input: float32 RGB images N x 3 x 224 x 224 (NCHW) on the 0-255 scale, the center 224 crop
    of the image resized to shorter side 256 and center-cropped to 256 x 256; TorchScript takes
    uint8 too. The training normalisation is inside (a mean image as its center 224 crop).
    Output: logits N x num_classes. OUT.json: class ids and names, the input contract, the
    normalisation, and the largest |exported - eager| logit on two random images.
    ONNX needs `pip install 'alexnet-dali[onnx]'` (checked with onnxruntime when installed).
    """
    from alexnet_dali.use.export import export_model
    from alexnet_dali.use.inference import load_for_inference

    inference = load_for_inference(ckpt, data)
    with explain_os_errors("run export again", out):
        info = export_model(inference, fmt, out)
    click.echo(f"wrote {out} ({fmt}) and {out}.json; {info['check']}")


@click.command("import-weights", short_help="torchvision's AlexNet weights as a checkpoint.")
@click.argument("source", type=click.Choice(["torchvision"]))
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", "run_dir", required=True, help="Run dir to write the checkpoint into.")
@click.option("--data", default=None,
              help="Shard folder whose manifest gives the class names (ImageNet's 1000).")
@report_user_errors
def import_weights_command(source: str, file: str, run_dir: str, data: str | None) -> None:
    """Turn torchvision's AlexNet weights FILE (alexnet-owt-7be5be79.pth) into a checkpoint.

    \b
    Example:
      alexnet-dali import-weights torchvision alexnet-owt-7be5be79.pth --out runs/tv \\
          --data imagenet-shards
      alexnet-dali eval imagenet-shards --checkpoint runs/tv
    \b
    The checkpoint has model.arch = "owt" and torchvision's normalisation (mean 255 x (0.485,
    0.456, 0.406), std 255 x (0.229, 0.224, 0.225) on the 0-255 scale); eval, predict and
    export accept it. Published for these weights (resize 256, center 224): acc@1 56.522,
    acc@5 79.066.
    """
    from alexnet_dali.loader.data import class_list
    from alexnet_dali.model.torchvision import import_torchvision

    classes = class_list(data) if data else None
    with explain_os_errors("run import-weights again", run_dir):
        path = import_torchvision(file, run_dir, classes=classes)
    click.echo(f"wrote {path}")


COMMANDS: list = [eval_command, figures_command, predict_command, export_command,
                  import_weights_command]
