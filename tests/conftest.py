"""Shared fixtures: a tiny generated ImageFolder dataset and its shards (manifest.json, pca.json);
the `gpu` marker's skip.

`raw_dataset`: ROOT/{train,val}/<class>/*.JPEG, 4 classes, 24 train + 8 val images per class,
sides 96-320 px, no odd files. `shard_dataset`: that data preprocessed (16 samples per shard:
6 train shards, 2 val shards) plus pca.json and mean_image.npy. Hand-made shard folders for the
pipeline tests come from `tests/helpers.py`. `tests/tempuse.py` measures the suite's temp folder
(its peak is limited by --temp-limit-gb, default 1).
"""

from __future__ import annotations

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
