"""The test shard writer (tests/helpers.py) and the DALI graph's label decoding agree."""

from __future__ import annotations

import tarfile
from pathlib import Path

from helpers import label_of, write_dataset


def test_writer_and_graph_labels(tmp_path: Path) -> None:
    """The loader turns the 6 ASCII digits the graph hands over back into the written ids."""
    import torch

    from alexnet_dali.config.schema import AugmentConfig, LoaderConfig
    from alexnet_dali.loader.eval import build_eval_loader

    root = write_dataset(tmp_path / "d", {"val": 11}, per_shard=4)
    with tarfile.open(root / "val" / "val-000000.tar") as tar:
        assert tar.getnames()[:2] == ["000000000.jpg", "000000000.cls"]
        assert tar.extractfile("000000001.cls").read() == f"{label_of(1):06d}".encode()
    loader = build_eval_loader(root, loader=LoaderConfig(num_threads=1), augment=AugmentConfig(),
                               batch_size=4, rank=0, world_size=1, device=torch.device("cpu"))
    labels = torch.cat([y[v] for _, y, v in loader])
    assert labels.dtype == torch.int64
    assert labels.tolist() == [label_of(i) for i in range(11)]
    assert max(labels.tolist()) > 99_999  # six significant digits decoded


def test_labels_from_digits_against_int() -> None:
    """The vectorised conversion equals int(b"...") per row; other widths or bytes are refused."""
    import pytest
    import torch

    from alexnet_dali.loader.handoff import labels_from_digits
    from alexnet_dali.errors import DataError

    ids = [0, 7, 17, 123_456, 999_999, 100_000]
    digits = torch.tensor([list(f"{i:06d}".encode()) for i in ids], dtype=torch.uint8)
    assert labels_from_digits(digits).tolist() == [int(bytes(row.tolist())) for row in digits]
    with pytest.raises(DataError, match="not 6 ASCII digits"):
        labels_from_digits(digits[:, :5])
    with pytest.raises(DataError, match="not 6 ASCII digits"):
        labels_from_digits(torch.tensor([list(b"00001a")], dtype=torch.uint8))
