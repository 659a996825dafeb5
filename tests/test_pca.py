"""pca-stats against a NumPy float64 reference on the decoded pixels; merging; sampling."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_dali.tools import pca
from alexnet_dali.tools.manifest import read_manifest


def decoded_train_pixels(out: Path, max_images: int | None = None) -> np.ndarray:
    """N x 256 x 256 x 3 uint8 of the train shards in manifest order (stdlib tar + Pillow)."""
    manifest = json.loads((out / "manifest.json").read_text())
    images = []
    for shard in manifest["splits"]["train"]["shards"]:
        with tarfile.open(out / shard["tar"]) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    data = tar.extractfile(member).read()
                    images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(images[:max_images])


def numpy_reference(images: np.ndarray) -> dict:
    """Mean, std, covariance (population) and eigen-decomposition with plain float64 NumPy."""
    x = images.reshape(-1, 3).astype(np.float64)
    cov = np.cov(x, rowvar=False, bias=True)
    values, vectors = np.linalg.eig(cov)
    order = np.argsort(-values)
    return {"mean": x.mean(0), "std": x.std(0), "covariance": cov, "eigenvalues": values[order],
            "eigenvectors": vectors[:, order]}


def assert_close(actual, expected, rtol=1e-6):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=0)


def test_pca_json_equals_numpy_reference(shard_dataset):
    result = json.loads((shard_dataset / "pca.json").read_text())
    images = decoded_train_pixels(shard_dataset)
    ref = numpy_reference(images)
    for key in ("mean", "std", "covariance", "eigenvalues"):
        assert_close(result[key], ref[key])
    vectors = np.asarray(result["eigenvectors"])
    for j in range(3):  # same eigenvector up to sign; then the pinned sign
        dot = abs(vectors[:, j] @ ref["eigenvectors"][:, j])
        assert dot == pytest.approx(1.0, abs=1e-9)
        assert vectors[np.argmax(np.abs(vectors[:, j])), j] > 0
    assert list(result["eigenvalues"]) == sorted(result["eigenvalues"], reverse=True)
    assert (result["images"], result["pixels"]) == (len(images), images[..., 0].size)
    manifest_bytes = (shard_dataset / "manifest.json").read_bytes()
    assert result["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert read_manifest(shard_dataset).sha256 == result["manifest_sha256"]


def test_mean_image_equals_numpy_reference(shard_dataset):
    result = json.loads((shard_dataset / "pca.json").read_text())
    mean = np.load(shard_dataset / result["mean_image"])
    assert mean.dtype == np.float32 and mean.shape == (256, 256, 3)
    ref = decoded_train_pixels(shard_dataset).astype(np.float64).mean(0)
    np.testing.assert_allclose(mean, ref, rtol=1e-6)


def test_partial_merge_equals_one_pass(shard_dataset):
    tasks = pca.shard_tasks(read_manifest(shard_dataset), None, mean_image=True)
    one_pass = pca.PixelSums.zero((256, 256))
    for task in tasks:  # one accumulator over every image
        for rgb in decoded_train_pixels_of(task[0].url(task[1])):
            one_pass = one_pass.add_image(rgb)
    parts = [pca.shard_sums(t) for t in reversed(tasks)]  # per shard, merged in another order
    merged = functools.reduce(pca.PixelSums.merge, parts)
    for field in ("images", "pixels"):
        assert getattr(merged, field) == getattr(one_pass, field)
    for field in ("sum", "outer", "image_sum"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(one_pass, field))


def decoded_train_pixels_of(tar_path: str) -> list[np.ndarray]:
    with tarfile.open(tar_path) as tar:
        return [np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
                for m in tar if m.name.endswith(".jpg")]


def test_one_and_two_workers_agree_and_max_images_samples_a_prefix(shard_dataset, tmp_path):
    one = pca.accumulate(pca.shard_tasks(read_manifest(shard_dataset), 37, False),
                         workers=1, progress=False)
    two = pca.accumulate(pca.shard_tasks(read_manifest(shard_dataset), 37, False),
                         workers=2, progress=False)
    assert one.images == two.images == 37
    np.testing.assert_array_equal(one.outer, two.outer)
    np.testing.assert_array_equal(one.sum, two.sum)
    ref = numpy_reference(decoded_train_pixels(shard_dataset, max_images=37))
    stats = pca.statistics(one)
    assert_close(stats["covariance"], ref["covariance"])
    assert_close(stats["mean"], ref["mean"])


def test_pin_signs_makes_largest_component_positive():
    vectors = np.array([[0.6, -0.8, 0.0], [-0.8, -0.6, 0.0], [0.0, 0.0, -1.0]])
    pinned = pca.pin_signs(vectors)
    np.testing.assert_array_equal(pinned, [[-0.6, 0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])


def test_exact_sums_do_not_lose_precision_on_constant_images():
    sums = pca.PixelSums.zero(None)
    for value in (250, 251):
        sums = sums.add_image(np.full((256, 256, 3), value, np.uint8))
    stats = pca.statistics(sums)
    np.testing.assert_allclose(stats["mean"], [250.5] * 3, rtol=0)
    np.testing.assert_allclose(stats["covariance"], np.full((3, 3), 0.25), rtol=0)


def test_stale_pca_json_is_refused_after_train_is_rebuilt(shard_dataset, tmp_path):
    from alexnet_dali.errors import DataError

    data = tmp_path / "shards"
    shutil.copytree(shard_dataset, data)
    pca.load_colour_stats(data)  # current: accepted
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"]["val"]["shards"][0]["sha256"] = "0" * 64  # another split: still current
    (data / "manifest.json").write_text(json.dumps(manifest))
    pca.load_colour_stats(data)
    manifest["splits"]["train"]["shards"][0]["sha256"] = "0" * 64  # train rebuilt
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"pca.json: computed from other train shards"):
        pca.load_colour_stats(data)
