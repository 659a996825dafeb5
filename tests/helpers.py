"""Tiny seeded shard folders for the pipeline/loader tests, written here with `tarfile` (not with
the project's own shard writer, so that the readers are checked against an independent one).

Labels are unique per sample (`label_of(i)`), so a test can tell samples apart by label.
`output_bytes` reads back what `preprocess` wrote, for byte-identity checks between runs.
`test_pipeline_shards.py` checks this writer against the DALI graph's label decoding. A plain
module rather than fixtures: tests call the writer with their own splits, shard sizes and faults,
and use `label_of` in their assertions.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 256


def label_of(i: int) -> int:
    """A unique class id per sample that exercises all six digits."""
    return 100_003 * (i % 9) + i


def smooth_image(rng: np.random.Generator) -> np.ndarray:
    """A 256×256×3 uint8 image with structure (so crops and flips differ) that JPEG keeps."""
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    noise = rng.integers(-20, 21, (SIZE, SIZE, 3))
    return np.clip(np.asarray(image, dtype=np.int64) + noise, 0, 255).astype(np.uint8)


def jpeg_bytes(array: np.ndarray) -> bytes:
    """Baseline RGB JPEG (quality 95, 4:4:4) of an HWC uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def write_tar(path: Path, samples: list[tuple[str, bytes, int]]) -> None:
    """A GNU tar with `<key>.jpg` and `<key>.cls` (6 ASCII digits) per sample."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for key, jpeg, label in samples:
            for name, payload in ((f"{key}.jpg", jpeg), (f"{key}.cls", f"{label:06d}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def write_index(tar_path: Path) -> None:
    """`<tar>.idx` beside a tar, from tarfile's member offsets (DALI's webdataset index)."""
    from alexnet_dali.tools.shards import IndexEntry, format_index

    samples: dict[str, list[IndexEntry]] = {}
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".")
            samples.setdefault(key, []).append(IndexEntry(ext, m.offset_data, m.size, m.name))
    tar_path.with_suffix(".idx").write_text(format_index(list(samples.values())))


def fake_pca(rng: np.random.Generator, mean_image: bool) -> dict:
    """pca.json content with a random orthonormal eigenbasis (eigenvectors are the columns)."""
    vectors, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return {
        "mean": [121.5, 113.25, 101.0], "std": [61.0, 59.5, 63.25],
        "eigenvalues": [40.0, 9.0, 2.5], "eigenvectors": vectors.tolist(),
        "mean_image": "mean_image.npy" if mean_image else None,
    }


def write_dataset(root: Path, splits: dict[str, int], per_shard: int = 8, seed: int = 0,
                  corrupt: tuple[str, int] | None = None, index: bool = False) -> Path:
    """A shard folder (manifest.json, pca.json, mean_image.npy) with `splits[name]` samples each.

    `corrupt=(split, i)` truncates sample i's JPEG; `index` writes `.idx` files (else DALI infers
    the index). Returns `root`.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"format": "alexnet-dali-shards", "format_version": 1, "splits": {},
                      "settings": {"size": SIZE, "seed": seed}}
    for split, count in splits.items():
        (root / split).mkdir(exist_ok=True)
        shards = []
        for start in range(0, count, per_shard):
            samples = []
            for i in range(start, min(count, start + per_shard)):
                jpeg = jpeg_bytes(smooth_image(rng))
                if corrupt == (split, i):
                    jpeg = jpeg[:300] + b"\x00" * 64
                samples.append((f"{i:09d}", jpeg, label_of(i)))
            name = f"{split}/{split}-{start // per_shard:06d}.tar"
            write_tar(root / name, samples)
            if index:
                write_index(root / name)
            shards.append({"tar": name, "index": name[:-4] + ".idx" if index else None,
                           "samples": len(samples)})
        manifest["splits"][split] = {"shards": shards, "samples": count}
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "pca.json").write_text(json.dumps(fake_pca(rng, mean_image=True)))
    mean_image = rng.uniform(60, 180, (SIZE, SIZE, 3)).astype(np.float32)
    np.save(root / "mean_image.npy", mean_image)
    return root


def output_bytes(out: Path) -> dict[str, bytes]:
    """Every shard, index and the manifest and rejects files, by relative path."""
    names = ["manifest.json"] + [p.relative_to(out).as_posix() for p in out.glob("*/*")
                                 if p.suffix in (".tar", ".idx", ".tsv")]
    return {name: (out / name).read_bytes() for name in sorted(names)}


def overwrite_middle_of_jpeg(tar: Path, sample: int = 0) -> tuple[str, bytes]:
    """Overwrite 200 bytes in the middle of one JPEG inside the tar (tar structure intact)."""
    from alexnet_dali.tools.shards import iter_samples

    key, entries, _ = list(iter_samples(tar, read=False))[sample]
    jpg = next(e for e in entries if e.ext == "jpg")
    data = bytearray(tar.read_bytes())
    middle = jpg.offset + jpg.size // 2
    data[middle:middle + 200] = np.random.default_rng(sample).bytes(200)
    tar.write_bytes(bytes(data))
    return key, bytes(data[jpg.offset:jpg.offset + jpg.size])
