"""`alexnet-dali bench pipeline` runs end to end on a tiny shard folder and prints its table."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from helpers import label_of, write_dataset

from alexnet_dali.cli import main
from alexnet_dali.errors import DataError
from alexnet_dali.bench.pillow import PillowReference
from alexnet_dali.pipelines.spec import load_shard_set
from alexnet_dali.tools.pca import load_colour_stats


def test_bench_pipeline_prints_all_rows(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", {"train": 12}, per_shard=6, index=True)
    result = CliRunner().invoke(main, [
        "bench", "pipeline", "--data", str(root), "--batch-size", "4", "--threads", "1",
        "--warmup", "1", "--batches", "2", "--reps", "2", "--dtype", "float16", "--baseline"])
    assert result.exit_code == 0, result.output
    names = r"DALI \(cpu\)|DALI baseline \(cpu\)|DataLoader \+ Pillow"
    rows = re.findall(rf"^\| ({names}) \| ([\d,]+) \|", result.output, re.M)
    assert [name for name, _ in rows] == ["DALI (cpu)", "DALI baseline (cpu)",
                                          "DataLoader + Pillow"]
    assert all(int(rate.replace(",", "")) > 0 for _, rate in rows)
    assert "DALI (cpu) / DALI baseline (cpu) (medians):" in result.output
    assert "DALI (cpu) / DataLoader + Pillow (medians):" in result.output
    cpu = re.findall(rf"^\| (?:{names}) \|.* \| ([\d.]+|\(other processes\)) \|$",
                     result.output, re.M)  # CPU ms per batch: DALI in this process only
    assert cpu[2] == "(other processes)" and all(float(c) > 0 for c in cpu[:2]), result.output
    assert "DALI (cpu) / DALI baseline (cpu) (images per CPU second, medians):" in result.output


def test_baseline_graph_does_the_minimal_work(tmp_path: Path) -> None:
    """Random 224 crops of the decoded image minus the channel mean, mirrored or not."""
    from alexnet_dali.bench.pipeline import baseline_batches
    from alexnet_dali.config.schema import LoaderConfig

    root = write_dataset(tmp_path / "d", {"train": 6}, per_shard=6)
    loader = LoaderConfig(num_threads=1, prefetch=1, shuffle_buffer=1)
    images, digits = next(baseline_batches(root, loader, 6, torch.device("cpu")))
    assert images.shape == (6, 3, 224, 224) and images.dtype == torch.float32
    keys = {label_of(i): f"{i:09d}" for i in range(6)}
    labels = [int(bytes(np.array(d)).decode()) for d in digits]
    mean = np.asarray(load_colour_stats(root).mean)
    with tarfile.open(root / "train" / "train-000000.tar") as tar:
        for image, label in zip(images.numpy(), labels):
            jpeg = tar.extractfile(f"{keys[label]}.jpg").read()
            decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
            # the window's anchor, from the first pixels of the output (mirror: its last column)
            found = [(x, y, m) for y in range(33) for x in range(33) for m in (0, 1)
                     if np.allclose(image[:, 0, 0 if not m else -1],
                                    decoded[y, x] - mean, atol=12)]
            assert any(np.abs(window(decoded, x, y, m) - mean - image.transpose(1, 2, 0)).mean()
                       < 2.0 for x, y, m in found), label


def window(decoded: np.ndarray, x: int, y: int, mirror: int) -> np.ndarray:
    crop = decoded[y:y + 224, x:x + 224]
    return crop[:, ::-1] if mirror else crop


def test_reference_does_the_same_work(tmp_path: Path) -> None:
    """The DataLoader reference yields 3×224×224 crops of the stored image, shifted by PCA noise."""
    root = write_dataset(tmp_path / "d", {"train": 6}, per_shard=6, index=True)
    shards = load_shard_set(root, "train")
    stats = load_colour_stats(root)
    reference = PillowReference(shards, stats, 224, "float32", seed=5)
    assert [reference.label(i) for i in range(len(reference))] == [label_of(i) for i in range(6)]
    image, label = reference[0]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    assert label == label_of(0)
    rng = np.random.default_rng(5)  # replay: anchor x, y; mirror; α
    x, y = rng.integers(0, 33, size=2)
    mirror = rng.random() < 0.5
    alpha = rng.normal(0.0, 0.1, 3)
    with tarfile.open(shards.tars[0]) as tar:
        decoded = np.asarray(Image.open(tar.extractfile("000000000.jpg")).convert("RGB"))
    shift = np.asarray(stats.eigenvectors) @ (alpha * np.sqrt(stats.eigenvalues))  # √λ default
    expected = decoded[y:y + 224, x:x + 224].astype(np.float64) - np.asarray(stats.mean) + shift
    if mirror:
        expected = expected[:, ::-1]
    np.testing.assert_allclose(image.numpy(), expected.transpose(2, 0, 1), atol=1e-2)


def test_reference_needs_the_shard_index(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", {"train": 2}, per_shard=2)
    with pytest.raises(DataError, match=r"train-000000\.tar: no \.idx index.*preprocess"):
        PillowReference(load_shard_set(root, "train"), load_colour_stats(root), 224, "float32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without CUDA")
def test_bench_gpu_decoder_without_cuda_is_one_error_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "alexnet_dali.cli", "bench", "pipeline",
                           "--decoder", "gpu", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: --decoder gpu: CUDA is not available on this machine; use --decoder cpu"]
    assert not any(tmp_path.iterdir())  # refused before generating the bench dataset


def test_measure_alternates_the_order_of_the_streams() -> None:
    """Every stream gets a turn each round; odd rounds run them in reverse order."""
    from alexnet_dali.bench.timing import measure

    pulled: list[str] = []

    def stream(name: str):
        while True:
            pulled.append(name)
            yield None

    rates = measure({"a": (stream("a"), 0), "b": (stream("b"), 0)}, batch_size=1, warmup=0,
                    count=1, reps=3, sync=lambda: None)
    assert pulled == ["a", "b", "b", "a", "a", "b"]
    assert list(rates) == ["a", "b"] and all(len(r) == 3 for r in rates.values())


def test_bench_pipeline_measures_the_shard_check(shard_dataset: Path) -> None:
    """--shard-check adds the loader with a fresh shard watcher every epoch and prints its cost:
    the ratio, the CPU per batch, and the hashing thread's own CPU per epoch and per image."""
    result = CliRunner().invoke(main, [
        "bench", "pipeline", "--data", str(shard_dataset), "--batch-size", "16", "--threads",
        "1", "--warmup", "0", "--batches", "12", "--reps", "2", "--skip-reference",
        "--shard-check"])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^\| (DALI \(cpu\)(?: \+ shard check)?) \| ([\d,]+) \|", result.output,
                      re.M)
    assert [name for name, _ in rows] == ["DALI (cpu)", "DALI (cpu) + shard check"]
    assert "DALI (cpu) + shard check / DALI (cpu) (medians):" in result.output
    assert "DALI (cpu) + shard check / DALI (cpu) (CPU ms per batch, medians):" in result.output
    hashing = re.search(r"^hashing thread: (\d+) ms CPU per epoch \((\d+) epochs, median\) = "
                        r"([\d.]+) us per image = ([\d.]+)% of the loader's ([\d.]+) ms CPU per "
                        r"image$", result.output, re.M)
    assert hashing, result.output
    assert int(hashing.group(2)) >= 2 and float(hashing.group(3)) > 0  # it did hash
