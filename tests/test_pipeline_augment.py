"""The DALI graphs against NumPy references that replay the returned draws (CPU).

The train pipeline in test mode returns the crop positions x, y (k/32 for integer anchor k), the
mirror bit, α and the decoded image; the NumPy reference (`pipelines/reference.py`, shared with
`alexnet-dali doctor`) recomputes every output pixel from those and the numbers in pca.json,
independently of the pipeline code.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from helpers import write_dataset

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
from alexnet_dali.loader.eval import build_eval_loader
from alexnet_dali.loader.train import build_train_loader
from alexnet_dali.pipelines import reference

CPU = torch.device("cpu")
LOADER = LoaderConfig(num_threads=1, prefetch=1, shuffle_buffer=8)
BATCH = 6


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("aug"), {"train": 18, "val": 10}, per_shard=6)


def anchors(positions: np.ndarray) -> np.ndarray:
    """Integer anchors of normalised crop positions (each must be exactly k/32)."""
    return np.array([reference.anchor(p) for p in positions])


def train_batch(data: Path, aug: AugmentConfig, loader: LoaderConfig = LOADER, seed: int = 3):
    tl = build_train_loader(data, loader=loader, augment=aug, batch_size=BATCH, rank=0,
                            world_size=1, device=CPU, seed=seed, return_draws=True)
    return tl.run_with_draws()


AUGMENTS = {
    "paper": AugmentConfig(),
    "no-augmentation": AugmentConfig(random_crop=False, flip=False, pca_noise=False),
    "mean-image-std": AugmentConfig(mean="image", std_normalize=True),
    "no-mean": AugmentConfig(mean="none", pca_std=0.5),
    "eigenvalue-scale": AugmentConfig(pca_scale="eigenvalue"),
    "rescale": AugmentConfig(pca_rescale=True),
    "rescale-eigenvalue-mean-image-std": AugmentConfig(
        mean="image", std_normalize=True, pca_rescale=True, pca_std=0.3, pca_scale="eigenvalue"),
    "rescale-without-noise": AugmentConfig(pca_noise=False, pca_rescale=True),
}


@pytest.mark.parametrize("name", list(AUGMENTS))
def test_train_outputs_replay_draws(data: Path, name: str) -> None:
    aug = AUGMENTS[name]
    outputs = [t.numpy() for t in train_batch(data, aug)]
    images, labels, pos_x, pos_y, mirrors, alphas, decoded = outputs
    xs, ys = anchors(pos_x), anchors(pos_y)
    assert images.shape == (6, 3, 224, 224) and images.dtype == np.float32
    assert labels.dtype == np.int64
    stats = reference.read_stats(data)
    for i in range(len(images)):
        ref = reference.train_view(decoded[i], xs[i], ys[i], mirrors[i], alphas[i], aug, stats)
        np.testing.assert_allclose(images[i], ref, atol=reference.FLOAT32_ATOL, rtol=1e-5)
    if not aug.random_crop:
        assert set(xs) == set(ys) == {16}
    if not aug.flip:
        assert not mirrors.any()
    if not aug.pca_noise:
        assert not alphas.any()


def test_draws_cover_their_ranges(data: Path) -> None:
    """Over 4 batches: positions k/32, k within 0..32 and spread; both mirror bits; α ~ N(0, σ)."""
    aug = AugmentConfig(pca_std=0.1)
    tl = build_train_loader(data, loader=LOADER, augment=aug, batch_size=BATCH, rank=0,
                            world_size=1, device=CPU, seed=5, return_draws=True)
    draws = [tl.run_with_draws() for _ in range(4)]
    xs = anchors(torch.cat([d[2] for d in draws]).numpy())
    ys = anchors(torch.cat([d[3] for d in draws]).numpy())
    mirrors = torch.cat([d[4] for d in draws]).numpy()
    alphas = torch.cat([d[5] for d in draws]).numpy()
    assert xs.min() >= 0 and xs.max() <= 32 and ys.min() >= 0 and ys.max() <= 32
    assert len(set(xs.tolist())) > 5 and len(set(ys.tolist())) > 5
    assert set(mirrors.tolist()) == {0, 1}
    assert alphas.shape == (24, 3) and 0.05 < alphas.std() < 0.2 and abs(alphas.mean()) < 0.06


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_dtype_and_layout(data: Path, dtype: str, layout: str) -> None:
    """Same seed, same draws: half-precision/NHWC output equals the float32 NCHW one, rounded."""
    ref = train_batch(data, AugmentConfig())[0].numpy()
    out = train_batch(data, AugmentConfig(), replace(LOADER, dtype=dtype, layout=layout))[0]
    assert out.dtype == getattr(torch, dtype)
    assert tuple(out.shape) == (6, 3, 224, 224)  # logically NCHW either way
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "NHWC")
    tol = 0.02 if dtype == "float16" else 0.05  # relative: 10 resp. 7 mantissa bits
    np.testing.assert_allclose(out.float().numpy(), ref, rtol=tol, atol=0.5)


def eval_batch(data: Path, aug: AugmentConfig, tencrop: bool):
    el = build_eval_loader(data, loader=LOADER, augment=aug, batch_size=BATCH, rank=0,
                           world_size=1, device=CPU, tencrop=tencrop, return_draws=True)
    return [t.numpy() for t in el.run_with_draws()]


@pytest.mark.parametrize("aug", [AugmentConfig(), AugmentConfig(mean="image", std_normalize=True)])
def test_center_crop(data: Path, aug: AugmentConfig) -> None:
    images, labels, decoded = eval_batch(data, aug, tencrop=False)
    assert images.shape == (6, 3, 224, 224)
    stats = reference.read_stats(data)
    for i in range(6):  # view 4 of the ten: the centre crop, anchor (16, 16)
        np.testing.assert_allclose(images[i], reference.tencrop_views(decoded[i], aug, stats)[4],
                                   atol=reference.FLOAT32_ATOL)


def test_tencrop_views_in_documented_order(data: Path) -> None:
    """tl, tr, bl, br, center, then each of those mirrored in place (pipelines/eval.py)."""
    aug = AugmentConfig()
    images, _, decoded = eval_batch(data, aug, tencrop=True)
    assert images.shape == (6, 10, 3, 224, 224)
    from alexnet_dali.pipelines.eval import TENCROP_VIEWS

    names = [name for name, *_ in TENCROP_VIEWS]
    assert names == list(reference.TENCROP_WINDOWS) + [
        f"mirrored {name}" for name in reference.TENCROP_WINDOWS]
    stats = reference.read_stats(data)
    for i in range(6):
        np.testing.assert_allclose(images[i], reference.tencrop_views(decoded[i], aug, stats),
                                   atol=reference.FLOAT32_ATOL)


def test_decoded_image_matches_pillow(data: Path) -> None:
    """The decoded image the references start from is the shard's JPEG (DALI vs Pillow)."""
    _, labels, decoded = eval_batch(data, AugmentConfig(), tencrop=False)
    with tarfile.open(data / "val" / "val-000000.tar") as tar:
        jpeg = tar.extractfile("000000000.jpg").read()
    pillow = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int64)
    diff = np.abs(decoded[0].astype(np.int64) - pillow)
    assert diff.mean() < 1.0 and diff.max() <= 8


def test_graph_float16_output(data: Path) -> None:
    """The graph's own float16 output (used on the GPU) equals its float32 output, rounded."""
    from alexnet_dali.loader.pipeline import pipeline_spec
    from alexnet_dali.pipelines.train import train_pipeline

    outputs = {}
    for dtype in ("float32", "float16"):
        spec = replace(pipeline_spec(data, "train", loader=LOADER, augment=AugmentConfig(),
                                     rank=0, world_size=1, device=CPU), dtype=dtype)
        pipe = train_pipeline(spec, batch_size=4, num_threads=1, device_id=None, seed=1)
        pipe.build()
        outputs[dtype] = np.array(pipe.run()[0].as_tensor())
    assert outputs["float16"].dtype == np.float16
    np.testing.assert_allclose(outputs["float16"].astype(np.float32), outputs["float32"],
                               rtol=1e-3, atol=0.07)


def traced_ops(pipe) -> list[tuple[str, str]]:
    """(operator, device) of every operator in a traced graph (DALI's private `_build_graph`)."""
    pipe._build_graph()
    return [(op._op._operator_name().rsplit(".", 1)[-1], op._op.device) for op in pipe._ops]


@pytest.mark.parametrize("mean", ["channel", "image"])
def test_gpu_graphs_trace_on_cpu_machine(data: Path, mean: str) -> None:
    """The device="gpu" graphs (mixed decode) trace with images on the GPU, draws on the CPU.

    Building them needs CUDA; tracing checks the operator placement without it, so a CPU-only
    CI still catches a broken GPU graph definition. On the GPU only the decoder and the fused
    crop_mirror_normalize (and the mean image's subtraction, ten-crop's stack) touch pixels.
    """
    from alexnet_dali.loader.pipeline import pipeline_spec
    from alexnet_dali.pipelines.baseline import baseline_pipeline
    from alexnet_dali.pipelines.eval import eval_pipeline
    from alexnet_dali.pipelines.train import train_pipeline

    aug = AugmentConfig(mean=mean, pca_rescale=True)
    spec = replace(pipeline_spec(data, "train", loader=LOADER, augment=aug, rank=0,
                                 world_size=1, device=CPU),
                   device="gpu", dtype="float16", return_draws=True)
    args = dict(batch_size=2, num_threads=1, device_id=0)
    train = train_pipeline(spec, seed=0, **args)
    tencrop = eval_pipeline(spec, tencrop=True, **args)
    baseline = baseline_pipeline(replace(spec, return_draws=False), **args)
    mean_image = ["cast", "constant", "sub"] if mean == "image" else []
    for pipe, outputs, gpu_ops in (
        (train, ["gpu"] + ["cpu"] * 5 + ["gpu"], mean_image + ["crop_mirror_normalize"]),
        (tencrop, ["gpu", "cpu", "gpu"], mean_image + ["crop_mirror_normalize"] * 10 + ["stack"]),
        (baseline, ["gpu", "cpu"], ["crop_mirror_normalize"]),
    ):
        on_gpu = [(name, device) for name, device in traced_ops(pipe) if device != "cpu"]
        assert on_gpu == [("image", "mixed")] + [(name, "gpu") for name in gpu_ops]
        assert [node.device for node in pipe._graph_outputs] == outputs


@pytest.mark.parametrize("tencrop", [False, True])
def test_graphs_are_lean(data: Path, tencrop: bool) -> None:
    """Every operator runs once per batch (a launch on the GPU): the train graph is the minimal
    graph plus the colour noise's three (normal, coord_transform, reshape); eval adds none."""
    from alexnet_dali.loader.pipeline import pipeline_spec
    from alexnet_dali.pipelines.baseline import baseline_pipeline
    from alexnet_dali.pipelines.eval import eval_pipeline
    from alexnet_dali.pipelines.train import train_pipeline

    spec = pipeline_spec(data, "train", loader=LOADER, augment=AugmentConfig(pca_rescale=True),
                         rank=0, world_size=1, device=CPU)
    args = dict(batch_size=2, num_threads=1, device_id=None)
    baseline = [name for name, _ in traced_ops(baseline_pipeline(spec, **args))]
    train = [name for name, _ in traced_ops(train_pipeline(spec, seed=0, **args))]
    assert sorted(train) == sorted(baseline + ["normal", "coord_transform", "reshape"])
    views = [name for name, _ in traced_ops(eval_pipeline(spec, tencrop=tencrop, **args))]
    assert views == ["webdataset", "image"] + ["crop_mirror_normalize"] * (10 if tencrop else 1) \
        + ["stack"] * tencrop
