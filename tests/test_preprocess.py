"""preprocess: odd files, outputs that decode (Pillow and DALI), labels, val mapping, index."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_dali.tools.images import ImageSettings
from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess
from alexnet_dali.tools.sample_data import (ODD_FILES, SampleDataConfig, class_name,
                                            write_sample_data)
from alexnet_dali.tools.scan import DataError

ODD = SampleDataConfig(classes=3, train_per_class=5, val_per_class=2, min_side=64, max_side=200,
                       seed=3, odd_files=True)
CONFIG = PreprocessConfig(image=ImageSettings(max_pixels=300 * 300), shard_size=8, workers=1)


def read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """All samples of a shard with the stdlib tarfile: key -> {ext: bytes}."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for info in tar:
            key, ext = info.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return samples


def provenance(out: Path, split: str) -> dict[str, str]:
    """key -> source path relative to the split root, from the shard records."""
    keys = {}
    for record in sorted((out / split).glob(f"{split}-*.json")):
        keys.update(dict(json.loads(record.read_text())["sources"]))
    return keys


def read_rejects(out: Path, split: str) -> dict[str, str]:
    lines = (out / split / "rejects.tsv").read_text().splitlines()
    assert lines[0] == "path\treason\tdetail"
    return {line.split("\t")[0]: line.split("\t")[1] for line in lines[1:]}


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """Sample data with every odd file kind, a bomb, a broken link, a stray file; preprocessed."""
    src = tmp_path_factory.mktemp("odd_src")
    write_sample_data(src, ODD)
    Image.new("RGB", (400, 400), (9, 9, 9)).save(src / "train" / class_name(1) / "bomb.JPEG")
    os.symlink(src / "missing.JPEG", src / "train" / class_name(2) / "broken_link.JPEG")
    (src / "train" / "stray.JPEG").write_bytes((src / "train" / class_name(1) / "bomb.JPEG")
                                               .read_bytes())
    out = tmp_path_factory.mktemp("odd_out")
    manifest = preprocess(src, out, CONFIG, progress=False)
    return src, out, manifest


def test_found_equals_written_plus_rejected(odd_run):
    src, out, manifest = odd_run
    for split in ("train", "val"):
        entry = manifest["splits"][split]
        files = [p for p in (src / split).rglob("*") if p.is_file() or p.is_symlink()]
        assert entry["found"] == len(files) == entry["written"] + entry["rejected"]
        assert entry["written"] == sum(s["samples"] for s in entry["shards"])
        assert len(provenance(out, split)) == entry["written"]
    totals = manifest["totals"]
    assert totals["found"] == totals["written"] + totals["rejected"]


def test_every_odd_file_converted_or_rejected_with_reason(odd_run):
    _, out, _ = odd_run
    rejects = read_rejects(out, "train")
    written = set(provenance(out, "train").values())
    for name, reason in ODD_FILES.items():
        rel = f"{class_name(0)}/{name}"
        if reason is None:
            assert rel in written, name
        else:
            assert rejects[rel] == reason, name
    assert rejects[f"{class_name(1)}/bomb.JPEG"] == "decompression-bomb"
    assert rejects[f"{class_name(2)}/broken_link.JPEG"] == "unreadable"
    assert rejects["stray.JPEG"] == "no-class-folder"


def test_outputs_decode_to_256_rgb_with_right_labels_and_content(odd_run):
    src, out, manifest = odd_run
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    for split in ("train", "val"):
        keys = provenance(out, split)
        for shard in manifest["splits"][split]["shards"]:
            for key, members in read_tar(out / shard["tar"]).items():
                assert set(members) == {"jpg", "cls"} and len(members["cls"]) == 6
                rel = keys[key]
                assert int(members["cls"]) == classes.index(rel.split("/")[0])
                img = Image.open(io.BytesIO(members["jpg"]))
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (256, 256))
                assert "progressive" not in img.info
                ref = reference_crop(src / split / rel)
                diff = np.abs(np.asarray(img, np.float64) - ref).mean()
                assert diff < 8.0, (rel, diff)  # another image: ~40


def reference_crop(path: Path) -> np.ndarray:
    """Independent reference: full-resolution decode, resize shorter side to 256, center crop."""
    img = Image.open(path)
    img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "RGBA") else img
    if img.mode.startswith("I"):
        img = Image.fromarray((np.asarray(img, np.float64) / 257).round().astype(np.uint8))
    img = img.convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    big = img.resize((max(256, round(w * scale)), max(256, round(h * scale))), Image.BICUBIC)
    left, top = (big.width - 256) // 2, (big.height - 256) // 2
    return np.asarray(big.crop((left, top, left + 256, top + 256)), np.float64)


def test_every_shard_mixes_classes(shard_dataset):
    manifest = json.loads((shard_dataset / "manifest.json").read_text())
    for shard in manifest["splits"]["train"]["shards"]:
        labels = {int(m["cls"]) for m in read_tar(shard_dataset / shard["tar"]).values()}
        assert len(labels) >= 2, shard["tar"]


def test_index_equals_dalis_wds2idx(odd_run, tmp_path):
    wds2idx = pytest.importorskip("wds2idx")
    _, out, manifest = odd_run
    for split in ("train", "val"):
        for shard in manifest["splits"][split]["shards"]:
            idx = tmp_path / "ref.idx"
            with wds2idx.IndexCreator(str(out / shard["tar"]), str(idx), verbose=False) as ic:
                ic.create_index()
            assert (out / shard["index"]).read_text() == idx.read_text()


def test_gnu_tar_format(odd_run):
    _, out, manifest = odd_run
    tar_path = out / manifest["splits"]["train"]["shards"][0]["tar"]
    header = tar_path.read_bytes()[:512]
    assert header[257:265] == b"ustar  \x00"  # GNU magic (POSIX ustar is b"ustar\x0000")


def test_shard_writer_writes_what_tarfile_writes(tmp_path):
    import io
    import tarfile

    from alexnet_dali.tools.shards import ShardWriter

    rng = np.random.default_rng(0)
    for count in (1, 3, 21):  # ends on and between tar records (10240 bytes)
        samples = [(f"{i:09d}", {"jpg": rng.bytes(int(rng.integers(1, 9000))), "cls": b"000012"})
                   for i in range(count)]
        writer = ShardWriter(tmp_path / f"{count}.tar")
        for key, members in samples:
            writer.add(key, members)
        writer.commit()
        ref = io.BytesIO()
        with tarfile.open(fileobj=ref, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for key, members in samples:
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
        assert (tmp_path / f"{count}.tar").read_bytes() == ref.getvalue(), count


@pytest.mark.parametrize("split", ["train", "val"])
def test_dali_cpu_reader_decodes_every_sample_with_index(odd_run, split):
    from nvidia.dali import fn, pipeline_def, types

    _, out, manifest = odd_run
    shards = manifest["splits"][split]["shards"]
    expected = {}
    for shard in shards:
        expected.update({k: int(m["cls"]) for k, m in read_tar(out / shard["tar"]).items()})

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def read():
        jpg, cls = fn.readers.webdataset(
            paths=[str(out / s["tar"]) for s in shards],
            index_paths=[str(out / s["index"]) for s in shards],
            ext=["jpg", "cls"], missing_component_behavior="error", name="reader")
        return fn.decoders.image(jpg, device="cpu", output_type=types.RGB), cls

    pipe = read()
    pipe.build()
    total = manifest["splits"][split]["samples"]
    assert pipe.epoch_size("reader") == total
    labels = []
    for _ in range(-(-total // 4)):
        images, cls = pipe.run()
        for i in range(len(images)):
            assert np.array(images[i]).shape == (256, 256, 3)
            labels.append(int(bytes(np.array(cls[i])).decode("ascii")))
    labels = labels[:total]  # the last batch is padded from the next epoch
    assert sorted(labels) == sorted(expected.values())


def test_val_uses_train_class_ids(shard_dataset, raw_dataset):
    classes = sorted(p.name for p in (raw_dataset / "train").iterdir())
    manifest = json.loads((shard_dataset / "manifest.json").read_text())
    assert [c["name"] for c in manifest["classes"]] == classes
    keys = provenance(shard_dataset, "val")
    for shard in manifest["splits"]["val"]["shards"]:
        for key, members in read_tar(shard_dataset / shard["tar"]).items():
            assert int(members["cls"]) == classes.index(keys[key].split("/")[0])


def test_val_class_missing_from_train_is_a_clear_error(tmp_path):
    write_sample_data(tmp_path / "src", SampleDataConfig(classes=2, train_per_class=1,
                                                          val_per_class=1, min_side=40,
                                                          max_side=60))
    (tmp_path / "src" / "val" / "n99999999").mkdir()
    with pytest.raises(DataError, match="n99999999.*not among the train classes"):
        preprocess(tmp_path / "src", tmp_path / "out", CONFIG, progress=False)


def test_bench_preprocess_table_says_what_its_ratios_compare_with() -> None:
    from alexnet_dali.tools.bench import PATHS, BenchRow, format_table

    rows = [BenchRow((500, 375), 10, name, seconds, seconds, 33.0, 4.2)
            for (name, *_), seconds in zip(PATHS, (2.0, 1.0, 0.5, 0.5, 0.625), strict=True)]
    lines = format_table(rows, workers=1).splitlines()
    assert "| x vs pillow, folders (wall, CPU) |" in lines[1]
    assert [line.split(" | ")[5] for line in lines[3:8]] == ["1.00x, 1.00x", "2.00x, 2.00x",
                                                             "4.00x, 4.00x", "4.00x, 4.00x",
                                                             "3.20x, 3.20x"]
    assert lines[-1] == ("preprocess with the PCA sums / without (all sizes): 16.0 / 20.0 img/s "
                         "= 0.80x wall, per CPU second 0.80x")
