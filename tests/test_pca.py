"""pca-stats against a NumPy float64 reference on the decoded pixels; merging; sampling; and
preprocess --pca (the same statistics from the pixels as they are written) against pca-stats."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHARD_CONFIG
from PIL import Image

from alexnet_dali.cli import main
from alexnet_dali.tools import pca
from alexnet_dali.tools.manifest import read_manifest
from alexnet_dali.tools.pixelstats import Accumulator, PixelSums, decode_rgb
from alexnet_dali.tools.preprocess import preprocess
from alexnet_dali.tools.shards import iter_shard


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


def preprocessed(raw: Path, out: Path, **options) -> Path:
    """raw -> shards with the pixel sums on (preprocess --pca), 16 samples a shard."""
    config = dataclasses.replace(SHARD_CONFIG, pca=True, **options)
    preprocess(raw, out, config, progress=False, notify=lambda _: None)
    return out


def assert_same_pca(a: Path, b: Path) -> None:
    """pca.json and mean_image.npy of two folders agree to 1e-6 relative (and are in fact the
    same numbers: both are computed from the same exact integer sums)."""
    pa, pb = (json.loads((d / "pca.json").read_text()) for d in (a, b))
    assert pa.keys() == pb.keys()
    for key in ("mean", "std", "covariance", "eigenvalues", "eigenvectors"):
        np.testing.assert_allclose(pb[key], pa[key], rtol=1e-6, atol=0)
        assert pb[key] == pa[key], key
    assert (pa["images"], pa["pixels"], pa["train_shards_sha256"]) == (
        pb["images"], pb["pixels"], pb["train_shards_sha256"])
    np.testing.assert_array_equal(np.load(a / "mean_image.npy"), np.load(b / "mean_image.npy"))


def test_preprocess_pca_equals_pca_stats_on_the_shards(raw_dataset, tmp_path):
    out = preprocessed(raw_dataset, tmp_path / "one-pass")
    assert (out / "pca.json").is_file() and (out / "mean_image.npy").is_file()
    again = Path(shutil.copytree(out, tmp_path / "two-pass"))
    (again / "pca.json").unlink()
    (again / "mean_image.npy").unlink()
    pca.pca_stats(again, workers=1, mean_image=True, progress=False)  # decodes the shards again
    assert_same_pca(out, again)
    assert (out / "pca.json").read_bytes() == (again / "pca.json").read_bytes()


def test_preprocess_pca_across_workers_parts_and_a_resume(raw_dataset, tmp_path):
    whole = preprocessed(raw_dataset, tmp_path / "whole")
    two = preprocessed(raw_dataset, tmp_path / "two-workers", workers=2)
    assert_same_pca(whole, two)
    parts = tmp_path / "parts"
    preprocessed(raw_dataset, parts, part=(2, 2))
    assert not (parts / "pca.json").exists()  # part 1 is not done: no manifest, no pca.json
    preprocessed(raw_dataset, parts, part=(1, 2))  # the last part writes both
    assert_same_pca(whole, parts)
    merged = CliRunner().invoke(main, ["merge-manifest", str(parts)])
    assert merged.exit_code == 0, merged.output
    assert_same_pca(whole, parts)
    for name in ("train-000002.tar", "train-000002.json", "pca.json"):  # one shard lost
        (parts / "train" / name if name.startswith("train-") else parts / name).unlink()
    preprocessed(raw_dataset, parts)  # rebuilds that shard only, then pca.json from all records
    assert_same_pca(whole, parts)


def test_shards_built_without_pca_leave_pca_stats_to_do_it(raw_dataset, tmp_path):
    out = tmp_path / "no-pca"
    notes = []
    preprocess(raw_dataset, out, dataclasses.replace(SHARD_CONFIG, pca=False), progress=False,
               notify=notes.append)
    assert not (out / "pca.json").exists() and not list(out.glob("train/*.sums.npy"))
    (out / "train" / "train-000001.json").unlink()  # resumed with --pca: one shard gets sums
    preprocess(raw_dataset, out, SHARD_CONFIG, progress=False, notify=notes.append)
    assert not (out / "pca.json").exists()
    assert notes[-1] == (f"note: {out / 'pca.json'} not written: 5 train shards were built "
                         f"without --pca; run `alexnet-dali pca-stats {out}`")


def test_fast_accumulator_equals_the_plain_reference():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in
              ((256, 256),) * 5 + ((255, 255),) * 2]  # last: not a multiple of the block
    images.append(np.full((256, 256, 3), 255, np.uint8))  # the largest sums
    large = [rng.integers(0, 256, (300, 301, 3), dtype=np.uint8) for _ in range(2)]  # 2 chunks
    for mean_image in (True, False):
        for group in (images[:5] + images[7:], images[5:7], large):
            fast = Accumulator(mean_image)
            ref = PixelSums.zero(group[0].shape[:2] if mean_image else None)
            for rgb in group:
                fast.add(rgb)
                ref = ref.add_image(rgb)
            got = fast.sums()
            assert (got.images, got.pixels) == (ref.images, ref.pixels)
            np.testing.assert_array_equal(got.sum, ref.sum)
            np.testing.assert_array_equal(got.outer, ref.outer)
            if mean_image:
                np.testing.assert_array_equal(got.image_sum, ref.image_sum)


def test_decode_rgb_gives_pillows_pixels(shard_dataset):
    for tar in sorted((shard_dataset / "train").glob("*.tar"))[:2]:
        for _, members in iter_shard(tar):
            with Image.open(io.BytesIO(members["jpg"])) as img:
                np.testing.assert_array_equal(decode_rgb(members["jpg"]),
                                              np.asarray(img.convert("RGB")))
