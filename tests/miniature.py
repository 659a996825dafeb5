"""Miniature ImageNet downloads in every layout, made of the same JPEG bytes, with the traps.

- ILSVRC2012_IDs scrambled: ID 1 is n02119789, not the first sorted WNID; two non-leaf synsets
  (num_children > 0) in meta.mat, as in the real devkit;
- the val tar's members are shuffled (member order is not name order);
- Kaggle's LOC_val_solution.csv rows are unsorted, with several boxes per PredictionString, and
  a test/ folder without labels;
- Hugging Face parquet shards with small row groups, unlabelled (-1) rows and a test split.
`truth` maps every image's canonical name (`<wnid>/<file>`) to its WNID.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# sorted: n01440764 n01443537 n02102040 n02119789; the devkit's IDs follow another order
LEAVES = {1: ("n02119789", "kit fox, Vulpes macrotis"), 2: ("n02102040", "English springer"),
          3: ("n01440764", "tench, Tinca tinca"), 4: ("n01443537", "goldfish, Carassius auratus")}
WNIDS = sorted(wnid for wnid, _ in LEAVES.values())
WORDS = {wnid: words for wnid, words in LEAVES.values()}
TRAIN_PER_CLASS, VAL_IMAGES = 5, 10
ODD_REJECTS = {f"{WNIDS[0]}/{WNIDS[0]}_9001.JPEG": "truncated"}


@dataclass(frozen=True)
class Miniature:
    """The images: train {wnid: [(file, bytes)]}, val [(file, wnid, bytes)] by number."""

    train: dict[str, list[tuple[str, bytes]]]
    val: list[tuple[str, str, bytes]]

    def truth(self, split: str) -> dict[str, str]:
        """Canonical name -> WNID."""
        if split == "train":
            return {f"{w}/{f}": w for w, files in self.train.items() for f, _ in files}
        return {f"{w}/{f}": w for f, w, _ in self.val}


def jpeg(rng: np.random.Generator) -> bytes:
    """A small random JPEG of random size."""
    w, h = (int(v) for v in rng.integers(40, 90, 2))
    pixels = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).resize((w, h), Image.BILINEAR).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def odd_files(rng: np.random.Generator) -> dict[str, tuple[bytes, str | None]]:
    """Odd files of the first class: name -> (bytes, reject reason or None if converted)."""
    png, cmyk = io.BytesIO(), io.BytesIO()
    Image.open(io.BytesIO(jpeg(rng))).save(png, "PNG")
    Image.open(io.BytesIO(jpeg(rng))).convert("CMYK").save(cmyk, "JPEG")
    whole = jpeg(rng)
    return {f"{WNIDS[0]}_9001.JPEG": (whole[:len(whole) // 2], "truncated"),
            f"{WNIDS[0]}_9002.JPEG": (png.getvalue(), None),
            f"{WNIDS[0]}_9003.JPEG": (cmyk.getvalue(), None)}


def make_miniature(seed: int = 0) -> Miniature:
    """The same images for every layout (the first class also has `odd_files`)."""
    rng = np.random.default_rng(seed)
    train = {w: [(f"{w}_{100 + 7 * i}.JPEG", jpeg(rng)) for i in range(TRAIN_PER_CLASS)]
             for w in WNIDS}
    train[WNIDS[0]] += [(name, data) for name, (data, _) in odd_files(rng).items()]
    val = [(f"ILSVRC2012_val_{n:08d}.JPEG", WNIDS[int(rng.integers(len(WNIDS)))], jpeg(rng))
           for n in range(1, VAL_IMAGES + 1)]
    return Miniature(train, val)


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of the members, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def meta_mat() -> bytes:
    """meta.mat with the devkit's struct fields: 4 leaves (IDs scrambled) and 2 inner synsets."""
    import scipy.io

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    rows = [(i, w, words, f"gloss of {w}", 0, np.zeros((1, 0)), 0, TRAIN_PER_CLASS)
            for i, (w, words) in LEAVES.items()]
    rows += [(5, "n01317541", "domestic animal", "g", 2, np.array([[1, 2]]), 1, 0),
             (6, "n00015388", "animal", "g", 3, np.array([[3, 4, 5]]), 2, 0)]
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for k, row in enumerate(rows):
        for f, value in zip(fields, row):
            synsets[k, 0][f] = value
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets})
    return buf.getvalue()


def write_official(mini: Miniature, root: Path, parts: tuple[str, ...] = ("train", "val",
                                                                         "devkit")) -> Path:
    """ILSVRC2012_img_train.tar (tar of per-class tars), _img_val.tar (shuffled), devkit."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    if "train" in parts:
        inner = [(f"{w}.tar", tar_bytes(files[::-1])) for w, files in mini.train.items()]
        (root / "ILSVRC2012_img_train.tar").write_bytes(tar_bytes(inner[::-1]))
    if "val" in parts:
        members = [(f, data) for f, _, data in mini.val]
        members = [members[i] for i in rng.permutation(len(members))]
        (root / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes(members))
    if "devkit" in parts:
        id_of = {w: i for i, (w, _) in LEAVES.items()}
        truth = "".join(f"{id_of[w]}\n" for _, w, _ in mini.val).encode()
        with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            for name, data in (("data/meta.mat", meta_mat()),
                               ("data/ILSVRC2012_validation_ground_truth.txt", truth)):
                info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return root


def write_extracted(mini: Miniature, root: Path) -> Path:
    """The torchvision way: train/<wnid>/<file>, val/<wnid>/<file>."""
    for w, files in mini.train.items():
        for f, data in files:
            (root / "train" / w).mkdir(parents=True, exist_ok=True)
            (root / "train" / w / f).write_bytes(data)
    for f, w, data in mini.val:
        (root / "val" / w).mkdir(parents=True, exist_ok=True)
        (root / "val" / w / f).write_bytes(data)
    return root


def write_kaggle(mini: Miniature, root: Path) -> Path:
    """LOC_synset_mapping.txt, unsorted LOC_val_solution.csv, ILSVRC/Data/CLS-LOC/..."""
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    for w, files in mini.train.items():
        (data / "train" / w).mkdir(parents=True, exist_ok=True)
        for f, jpg in files:
            (data / "train" / w / f).write_bytes(jpg)
    (data / "val").mkdir(parents=True)
    (data / "test").mkdir()
    (data / "test" / "ILSVRC2012_test_00000001.JPEG").write_bytes(mini.val[0][2])
    rows = []
    for f, w, jpg in mini.val:
        (data / "val" / f).write_bytes(jpg)
        other = WNIDS[0] if w != WNIDS[0] else WNIDS[1]
        rows.append(f"{f.split('.')[0]},{w} 1 2 30 40 {other} 5 6 20 20 {w} 0 0 9 9 ")
    rows = [rows[i] for i in np.random.default_rng(2).permutation(len(rows))]
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows)
                                               + "\n")
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {WORDS[w]}\n" for w in WNIDS))
    return root


def write_hf(mini: Miniature, root: Path, rows_per_group: int = 3) -> Path:
    """data/{train,validation,test}-NNNNN-of-NNNNN.parquet; -1 rows; ClassLabel names."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {"image": {"_type": "Image"},
                "label": {"names": [WORDS[w] for w in WNIDS], "_type": "ClassLabel"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    train = [(f"{f.split('.')[0]}_{w}.JPEG", WNIDS.index(w), d)
             for w, files in mini.train.items() for f, d in files]
    train = [train[i] for i in np.random.default_rng(3).permutation(len(train))]
    train.insert(4, ("unlabelled.JPEG", -1, mini.val[0][2]))
    val = [(f"{f.split('.')[0]}_{w}.JPEG", WNIDS.index(w), d) for f, w, d in mini.val]
    test = [("ILSVRC2012_test_00000001.JPEG", -1, mini.val[1][2])]
    (root / "data").mkdir(parents=True)
    for prefix, rows, count in (("train", train, 2), ("validation", val, 1), ("test", test, 1)):
        for k in range(count):
            part = rows[k::count]
            table = pa.table({
                "image": pa.array([{"bytes": d, "path": p} for p, _, d in part],
                                  pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                "label": pa.array([c for _, c, _ in part], pa.int64())})
            table = table.replace_schema_metadata(meta)
            pq.write_table(table, root / "data" / f"{prefix}-{k:05d}-of-{count:05d}.parquet",
                           row_group_size=rows_per_group)
    return root


def write_flat_tf(mini: Miniature, root: Path) -> tuple[Path, Path]:
    """A flat val folder and TF's imagenet_2012_validation_synset_labels.txt."""
    (root / "val").mkdir(parents=True)
    for f, _, data in mini.val:
        (root / "val" / f).write_bytes(data)
    labels = root / "imagenet_2012_validation_synset_labels.txt"
    labels.write_text("".join(f"{w}\n" for _, w, _ in mini.val))
    return root / "val", labels
