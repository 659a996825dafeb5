"""Shared fixtures: a tiny generated ImageFolder dataset and its shards (manifest.json, pca.json);
the `gpu` marker's skip; `s3`, a real S3-compatible server on 127.0.0.1 (`tests/s3server.py`).

`raw_dataset`: ROOT/{train,val}/<class>/*.JPEG, 4 classes, 24 train + 8 val images per class,
sides 96-320 px, no odd files. `shard_dataset`: that data preprocessed (16 samples per shard:
6 train shards, 2 val shards) plus pca.json and mean_image.npy. Hand-made shard folders for the
pipeline tests come from `tests/helpers.py`. `tests/tempuse.py` measures the suite's temp folder
(its peak is limited by --temp-limit-gb, default 1).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tempuse import (  # noqa: F401 - hooks and a fixture, found here by pytest
    pytest_addoption, pytest_runtest_logstart, pytest_sessionfinish, pytest_terminal_summary,
    temp_use_sampler)

from alexnet_dali.tools.images import ImageSettings
from alexnet_dali.tools.pca import pca_stats
from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess
from alexnet_dali.tools.sample_data import SampleDataConfig, write_sample_data

RAW_CONFIG = SampleDataConfig(classes=4, train_per_class=24, val_per_class=8, min_side=96,
                              max_side=320, seed=0)
SHARD_CONFIG = PreprocessConfig(image=ImageSettings(), seed=0, shard_size=16, workers=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `@pytest.mark.gpu` are skipped where torch sees no CUDA device."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device (marker gpu)"))


@pytest.fixture(scope="session")
def raw_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageFolder root with train/ and val/ (4 classes; 96 train, 32 val images)."""
    root = tmp_path_factory.mktemp("raw")
    write_sample_data(root, RAW_CONFIG)
    return root


@pytest.fixture(scope="session")
def shard_dataset(raw_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shard folder: manifest.json, pca.json, mean_image.npy, train/ and val/ shards + indexes."""
    out = tmp_path_factory.mktemp("shards")
    preprocess(raw_dataset, out, SHARD_CONFIG, progress=False)
    pca_stats(out, workers=1, mean_image=True, progress=False)
    return out


@pytest.fixture(scope="session")
def s3():
    """An S3-compatible server on 127.0.0.1 for the whole session (.ci/run's, or one started
    here), with AWS_ENDPOINT_URL and credentials set in this process: DALI's S3 client reads
    them once, when it is first used, so every in-process test shares this one server."""
    from s3server import ENDPOINT_ENV, S3, start_server, stop_server

    process, endpoint = (None, os.environ[ENDPOINT_ENV]) if os.environ.get(ENDPOINT_ENV) \
        else start_server()
    server = S3(endpoint)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.env().items():
            patch.setenv(key, value)
        yield server
    if process is not None:
        stop_server(process)


@pytest.fixture(scope="session")
def s3_shards(s3, shard_dataset: Path) -> str:
    """`shard_dataset` uploaded to the server: the s3:// URL of the same shard folder."""
    return s3.upload(shard_dataset, "shards", "tiny")
