"""Input layouts: official tars, Kaggle, Hugging Face parquet, folders; labels and traps.

Every layout is written from the same miniature JPEGs (tests/miniature.py), so the shards must
be byte-identical across layouts and every label must match the truth (index of the WNID in the
sorted WNID list), whatever the devkit IDs, the val tar's member order or the CSV's row order.
"""

from __future__ import annotations

import json
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from miniature import (LEAVES, ODD_REJECTS, WNIDS, WORDS, make_miniature, write_extracted,
                       write_flat_tf, write_hf, write_kaggle, write_official)

from alexnet_dali.tools import preprocess as pp
from alexnet_dali.tools.imagenet import parse_meta
from alexnet_dali.tools.layouts import detect_layout
from alexnet_dali.errors import DataError

CONFIG = pp.PreprocessConfig(shard_size=4, workers=1, seed=3)


@pytest.fixture(scope="module")
def mini():
    return make_miniature()


@pytest.fixture(scope="module")
def roots(mini, tmp_path_factory) -> dict[str, Path]:
    """SRC folders of every layout, same images."""
    base = tmp_path_factory.mktemp("layouts")
    mapping = base / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{w} {WORDS[w]}\n" for w in WNIDS[::-1]))  # any line order
    return {"official": write_official(mini, base / "official"),
            "extracted": write_extracted(mini, base / "extracted"),
            "kaggle": write_kaggle(mini, base / "kaggle"),
            "hf": write_hf(mini, base / "hf"), "mapping": mapping}


def run(src: Path, out: Path, config: pp.PreprocessConfig = CONFIG, **kwargs):
    """preprocess, collecting the notes; returns (manifest, notes)."""
    notes: list[str] = []
    manifest = pp.preprocess(src, out, config, progress=False, notify=notes.append, **kwargs)
    return manifest, notes


@pytest.fixture(scope="module")
def outputs(roots, tmp_path_factory) -> dict[str, tuple[Path, dict, list[str]]]:
    """Each layout preprocessed once: (OUT, manifest, notes)."""
    done = {}
    for name, extra in (("official", {}), ("extracted", {}), ("kaggle", {}),
                        ("hf", {}), ("hf-names", {"class_names": roots["mapping"]})):
        out = tmp_path_factory.mktemp(f"out-{name}")
        manifest, notes = run(roots[name.split("-")[0]], out, **extra)
        done[name] = (out, manifest, notes)
    return done


def shard_bytes(out: Path) -> dict[str, bytes]:
    """Every shard tar and index by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.glob("*/*")) if p.suffix in (".tar", ".idx")}


def labelled(out: Path, split: str) -> dict[str, int]:
    """Canonical source name -> class id stored in the shards."""
    by_key = {}
    for record in (out / split).glob(f"{split}-*.json"):
        info = json.loads(record.read_text())
        if info["tar"]:
            with tarfile.open(out / info["tar"]) as tar:
                cls = {m.name[:-4]: int(tar.extractfile(m).read()) for m in tar
                       if m.name.endswith(".cls")}
            by_key.update({name: cls[key] for key, name in info["sources"]})
    return by_key


def test_layout_detected_from_content(roots, tmp_path):
    assert {name: detect_layout(roots[name]) for name in ("official", "kaggle", "hf")} == {
        "official": "official", "kaggle": "kaggle", "hf": "hf"}
    assert detect_layout(roots["extracted"]) == "folders"
    with pytest.raises(DataError, match=r"no known input layout; looked for official "
                                        r"\(ILSVRC2012_img_train.tar.*kaggle.*hf.*folders"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="unknown layout 'tfds'; choose one of official"):
        run(roots["official"], tmp_path / "out", layout="tfds")


@pytest.mark.parametrize("layout", ["extracted", "kaggle", "hf-names"])
def test_same_images_give_byte_identical_shards_in_every_layout(outputs, layout):
    reference = shard_bytes(outputs["official"][0])
    assert len([n for n in reference if n.startswith("val/")]) >= 4
    assert shard_bytes(outputs[layout][0]) == reference


@pytest.mark.parametrize("layout", ["official", "extracted", "kaggle", "hf", "hf-names"])
def test_every_label_is_the_sorted_wnid_index(mini, outputs, layout):
    out, manifest, _ = outputs[layout]
    for split in ("train", "val"):
        truth = mini.truth(split)
        got = labelled(out, split)
        expected = {name: WNIDS.index(w) for name, w in truth.items() if name not in ODD_REJECTS}
        if layout == "hf":  # without a mapping file the class names are the ids
            expected = {f"{c}/{n.split('/')[1].replace('.', '_' + WNIDS[c] + '.')}": c
                        for n, c in expected.items()}
        assert got == expected
        entry = manifest["splits"][split]
        assert entry["found"] == entry["written"] + entry["rejected"] == len(truth)
    assert manifest["splits"]["train"]["reject_reasons"] == {"truncated": 1}


def test_devkit_ids_are_not_class_ids():
    from miniature import meta_mat

    id_to_wnid, words = parse_meta(meta_mat(), Path("meta.mat"))
    assert id_to_wnid == {i: w for i, (w, _) in LEAVES.items()}  # the non-leaf synsets are out
    assert id_to_wnid[1] == "n02119789" and WNIDS.index("n02119789") == 3
    assert words["n01440764"] == "tench, Tinca tinca"


def test_val_tar_members_are_not_in_name_order(roots):
    with tarfile.open(roots["official"] / "ILSVRC2012_img_val.tar") as tar:
        names = tar.getnames()
    assert names != sorted(names)  # so pairing by position would mislabel


@pytest.mark.parametrize("layout", ["official", "kaggle", "hf-names"])
def test_manifest_carries_wnids_and_words(outputs, layout):
    classes = outputs[layout][1]["classes"]
    assert classes == [{"id": i, "name": w, "words": WORDS[w]} for i, w in enumerate(WNIDS)]


def test_hf_without_mapping_names_classes_by_id_with_the_shards_words(outputs):
    classes = outputs["hf"][1]["classes"]
    assert classes == [{"id": i, "name": str(i), "words": WORDS[w]}
                       for i, w in enumerate(WNIDS)]


def test_the_layout_comes_first_then_where_the_class_names_come_from(outputs, roots):
    hf_notes = outputs["hf"][2]
    assert hf_notes[0] == f"layout: hf (detected from {roots['hf']}; --layout NAME overrides)"
    assert ("note: class names are the label ids 0-3 (the parquet shards hold no WNIDs), words "
            "from the shards' metadata; for WNIDs put the dataset repository's classes.py in "
            "SRC, or pass --class-names FILE (classes.py, or '<wnid> <words>' lines: Kaggle's "
            "LOC_synset_mapping.txt, Caffe's synset_words.txt)") in hf_notes
    assert not any("label ids" in n for n in outputs["hf-names"][2])  # --class-names given
    assert outputs["extracted"][2][0].startswith("layout: folders (detected from ")
    assert ("note: the classes are WNID folders without words (predict and eval show the "
            "WNIDs): pass --class-names FILE ('<wnid> <words>' lines: Kaggle's "
            "LOC_synset_mapping.txt, Caffe's synset_words.txt) or put such a file in SRC as "
            "synset_words.txt") in outputs["extracted"][2]


CLASSES_PY = """from collections import OrderedDict

IMAGENET2012_CLASSES = OrderedDict(
    {{
{}    }}
)
"""


def test_hf_reads_classes_py_beside_data_for_wnids_and_words(mini, tmp_path, outputs):
    src = write_hf(mini, tmp_path / "hf")
    entries = "".join(f'        "{w}": "{WORDS[w]}",\n' for w in WNIDS)
    (src / "classes.py").write_text(CLASSES_PY.format(entries))
    manifest, notes = run(src, tmp_path / "out")
    assert manifest["classes"] == outputs["hf-names"][1]["classes"]  # as with the mapping file
    assert f"note: class names and words from {src / 'classes.py'}" in notes
    pairs = "".join(f'    ("{w}", "{WORDS[w]}"),\n' for w in WNIDS)
    listed = tmp_path / "pairs.py"
    listed.write_text(f"from collections import OrderedDict\nC = OrderedDict([\n{pairs}])\n")
    again, _ = run(src, tmp_path / "out2", class_names=listed)
    assert again["classes"] == manifest["classes"]
    bad = tmp_path / "bad.py"
    bad.write_text("NAMES = {'tench': 'tench, Tinca tinca'}\n")
    with pytest.raises(DataError, match="bad.py: no {'<wnid>': '<words>', ...} literal"):
        run(src, tmp_path / "out3", class_names=bad)


def test_folders_read_synset_words_txt_beside_train(mini, tmp_path):
    src = write_extracted(mini, tmp_path / "src")
    (src / "synset_words.txt").write_text("".join(f"{w} {WORDS[w]}\n" for w in WNIDS))
    manifest, notes = run(src, tmp_path / "out")
    assert [c["words"] for c in manifest["classes"]] == [WORDS[w] for w in WNIDS]
    assert f"note: class words from {src / 'synset_words.txt'}" in notes
    assert not any("without words" in n for n in notes)


def test_notes_for_skipped_and_odd_data(outputs):
    notes = {name: " | ".join(outputs[name][2]) for name in ("official", "kaggle", "hf")}
    assert "test: skipped (the test images have no labels)" in notes["kaggle"]
    assert "train: skipped 1 unlabelled rows (label -1)" in notes["hf"]
    assert "test-*.parquet: skipped (1 files; the test images have no labels)" in notes["hf"]
    for text in notes.values():
        assert "looks like ImageNet-1k but has 4 classes, not 1000" in text
        assert "val split has 10 images, not 50,000" in text


def test_tf_synset_labels_for_a_flat_val_folder(mini, roots, outputs, tmp_path):
    out = tmp_path / "out"
    run(roots["extracted"] / "train", out, split="train")
    flat, labels = write_flat_tf(mini, tmp_path / "tf")
    (flat / "README.txt").write_text("not an image")
    manifest, _ = run(flat, out, split="val", val_labels=labels)
    assert manifest["splits"]["val"]["reject_reasons"] == {"no-label": 1}
    official = outputs["official"][0]
    assert {k: v for k, v in shard_bytes(out).items() if k.startswith("val/")} == \
        {k: v for k, v in shard_bytes(official).items() if k.startswith("val/")}


def test_partial_downloads_build_the_splits_present(mini, tmp_path):
    train_only = write_official(mini, tmp_path / "train_only", parts=("train",))
    manifest, notes = run(train_only, tmp_path / "out1")
    assert set(manifest["splits"]) == {"train"}
    assert [c["name"] for c in manifest["classes"]] == WNIDS
    assert any("no ILSVRC2012_devkit_t12.tar.gz" in n for n in notes)
    val_only = write_official(mini, tmp_path / "val_only", parts=("val", "devkit"))
    manifest, _ = run(val_only, tmp_path / "out2")
    assert set(manifest["splits"]) == {"val"} and manifest["splits"]["val"]["written"] == 10
    no_devkit = write_official(mini, tmp_path / "no_devkit", parts=("val",))
    with pytest.raises(DataError, match="labels are in ILSVRC2012_devkit_t12.tar.gz"):
        run(no_devkit, tmp_path / "out3")


def test_truncated_train_tar_is_a_clear_error(roots, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = (roots["official"] / "ILSVRC2012_img_train.tar").read_bytes()
    (src / "ILSVRC2012_img_train.tar").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"ILSVRC2012_img_train.tar: truncated \(n\d{8}.tar ends"):
        run(src, tmp_path / "out")


def test_empty_class_folder_is_a_warning_naming_it(mini, tmp_path):
    src = write_extracted(mini, tmp_path / "src")
    (src / "train" / "n01500000").mkdir()
    manifest, notes = run(src, tmp_path / "out")
    assert [c["name"] for c in manifest["classes"]][2] == "n01500000"
    assert any(f"class folder {src / 'train' / 'n01500000'} has no images: it still takes "
               "class id 2, which shifts the id of every later class" in n for n in notes)


def test_missing_pyarrow_says_which_extra_to_install(roots, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"pip install 'alexnet-dali\[hf\]'"):
        run(roots["hf"], tmp_path / "out")


@pytest.mark.parametrize("layout", ["official", "hf"])
def test_workers_parts_and_resume_identical_for_containers(roots, outputs, tmp_path, monkeypatch,
                                                           layout):
    reference = shard_bytes(outputs[layout][0])
    run(roots[layout], tmp_path / "w2", replace(CONFIG, workers=2))
    assert shard_bytes(tmp_path / "w2") == reference
    for i in (1, 2):
        run(roots[layout], tmp_path / "parts", replace(CONFIG, part=(i, 2)))
    assert shard_bytes(tmp_path / "parts") == reference
    real_write = pp.write_shard

    def interrupted(out, split, job, listing, results, sums=False):
        if job.index == 2:
            next(results)
            raise KeyboardInterrupt
        return real_write(out, split, job, listing, results, sums)

    monkeypatch.setattr(pp, "write_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(roots[layout], tmp_path / "resumed")
    monkeypatch.setattr(pp, "write_shard", real_write)
    run(roots[layout], tmp_path / "resumed")
    assert shard_bytes(tmp_path / "resumed") == reference


def test_cli_prints_notes_and_summary(roots, tmp_path):
    from click.testing import CliRunner

    from alexnet_dali.cli import main

    args = ["preprocess", str(roots["kaggle"]), str(tmp_path / "out"), "--workers", "1",
            "--shard-size", "8", "--quiet", "--class-names", str(roots["mapping"])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "warning: this looks like ImageNet-1k but has 4 classes, not 1000" in result.output
    assert "note: " in result.output and "test: skipped" in result.output
    assert "train: found 23 = written 22 + rejected 1" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["preprocess", str(empty), str(tmp_path / "o2")])
    assert result.exit_code == 2
    assert "error: " in result.output and "no known input layout; looked for" in result.output


def test_layout_option_overrides_detection(mini, roots, tmp_path):
    src = write_extracted(mini, tmp_path / "src")  # extracted train/ and val/ beside the devkit
    (src / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(
        (roots["official"] / "ILSVRC2012_devkit_t12.tar.gz").read_bytes())
    assert detect_layout(src) == "folders"
    with pytest.raises(DataError, match="no train or val images found in the official layout"):
        run(src, tmp_path / "out1", layout="official")
    manifest, _ = run(src, tmp_path / "out2", layout="folders",
                      class_names=roots["mapping"])
    assert manifest["classes"][0] == {"id": 0, "name": WNIDS[0], "words": WORDS[WNIDS[0]]}


def test_devkit_beside_extracted_folders_is_the_folders_layout(mini, roots, outputs, tmp_path):
    """torchvision's ImageNet root after the big tars were deleted: devkit + train/ + val/."""
    src = write_extracted(mini, tmp_path / "src")
    (src / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(
        (roots["official"] / "ILSVRC2012_devkit_t12.tar.gz").read_bytes())
    run(src, tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == shard_bytes(outputs["official"][0])
    devkit_only = tmp_path / "devkit_only"
    devkit_only.mkdir()
    (devkit_only / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(
        (src / "ILSVRC2012_devkit_t12.tar.gz").read_bytes())
    assert detect_layout(devkit_only) == "official"  # its error names the missing tars
