"""The yardstick of `bench pipeline`: a torch DataLoader + Pillow doing the DALI train graph's
work per image (decode, random 224 crop, flip with p=0.5, PCA colour noise, mean subtraction,
cast to the output dtype, NCHW batches) on the same tar shards. It uses `num_workers` = the DALI
thread count and finds each sample through the shards' DALI index."""

from __future__ import annotations

import io
from typing import Iterator

import numpy as np

from alexnet_dali.bench.timing import cycle
from alexnet_dali.errors import DataError
from alexnet_dali.pipelines.recipe import pca_matrix
from alexnet_dali.pipelines.spec import ShardSet
from alexnet_dali.tools.pca import ColourStats
from alexnet_dali.tools.shards import read_index


class PillowReference:
    """Map-style torch Dataset: tar bytes → Pillow decode → crop/flip/PCA/normalise (NumPy)."""

    def __init__(self, shards: ShardSet, stats: ColourStats, crop: int, dtype: str,
                 pca_scale: str = "sqrt", seed: int = 0) -> None:
        if shards.indexes is None:
            raise DataError(f"{shards.tars[0]}: no .idx index beside the shards; "
                            "re-run `alexnet-dali preprocess`, which writes them")
        self.tars, self.crop, self.dtype, self.seed = shards.tars, crop, dtype, seed
        # (shard number, {ext: IndexEntry}) per sample, in shard order
        self.items = [(t, sample) for t, index in enumerate(shards.indexes)
                      for sample in read_index(index)]
        self.matrix = pca_matrix(stats, pca_scale)
        self.mean = np.asarray(stats.mean, dtype=np.float32)
        self._files: dict[int, object] = {}
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, shard: int, ext: str, sample: dict) -> bytes:
        f = self._files.get(shard) or self._files.setdefault(shard, open(self.tars[shard], "rb"))
        f.seek(sample[ext].offset)
        return f.read(sample[ext].size)

    def label(self, i: int) -> int:
        """The class id of sample `i` (its `.cls` member)."""
        shard, sample = self.items[i]
        return int(self._read(shard, "cls", sample))

    def __getitem__(self, i: int):
        """→ (CHW tensor of `dtype`, int label), with the paper's training augmentation.

        Draws, in order: crop anchor x, y; mirror; α. Each DataLoader worker seeds its own
        generator; in the main process the generator starts from `seed`.
        """
        import torch
        from PIL import Image

        if self._rng is None:  # one generator per DataLoader worker
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng(info.seed if info else self.seed)
        shard, sample = self.items[i]
        img = np.asarray(Image.open(io.BytesIO(self._read(shard, "jpg", sample))).convert("RGB"))
        span = img.shape[0] - self.crop
        x, y = self._rng.integers(0, span + 1, size=2)
        img = img[y:y + self.crop, x:x + self.crop]
        if self._rng.random() < 0.5:
            img = img[:, ::-1]
        shift = self.matrix @ self._rng.normal(0.0, 0.1, 3).astype(np.float32)
        out = img.astype(np.float32) - (self.mean - shift)
        tensor = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
        return tensor.to(getattr(torch, self.dtype)), self.label(i)


def pillow_stream(shards: ShardSet, stats: ColourStats, *, batch_size: int, threads: int,
                  prefetch: int, dtype: str) -> tuple[Iterator, int]:
    """The reference's batches (a DataLoader of `PillowReference`, its workers started and one
    batch out), and how many it holds in flight."""
    import torch

    batches = cycle(torch.utils.data.DataLoader(
        PillowReference(shards, stats, 224, dtype), batch_size=batch_size, shuffle=True,
        num_workers=threads, prefetch_factor=prefetch, persistent_workers=True, drop_last=True))
    next(batches)
    return batches, threads * prefetch
