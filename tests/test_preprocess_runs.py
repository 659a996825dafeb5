"""preprocess runs: worker count, resume after interruption, --part shares, symlinks, flat val."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import output_bytes

from alexnet_dali.tools import preprocess as pp
from alexnet_dali.tools.manifest import write_manifest
from alexnet_dali.tools.sample_data import SampleDataConfig, class_name, write_sample_data
from alexnet_dali.tools.scan import DataError

SMALL = SampleDataConfig(classes=3, train_per_class=10, val_per_class=3, min_side=48,
                         max_side=160, seed=5, odd_files=True)
CONFIG = pp.PreprocessConfig(shard_size=4, workers=1, seed=7)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs_src")
    write_sample_data(root, SMALL)
    return root


@pytest.fixture(scope="module")
def reference(src, tmp_path_factory) -> dict[str, bytes]:
    """One uninterrupted single-worker run."""
    out = tmp_path_factory.mktemp("runs_ref")
    pp.preprocess(src, out, CONFIG, progress=False)
    return output_bytes(out)


def test_one_and_two_workers_byte_identical(src, reference, tmp_path):
    pp.preprocess(src, tmp_path, replace(CONFIG, workers=2), progress=False)
    assert output_bytes(tmp_path) == reference
    assert len([n for n in reference if n.endswith(".tar")]) > 4


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_interruption_gives_identical_shards(src, reference, tmp_path, monkeypatch,
                                                          workers):
    config = replace(CONFIG, workers=workers)
    real_write, calls = pp.write_shard, []

    def interrupted(out, split, job, listing, results, sums=False):
        if len(calls) == 3:  # die while writing the 4th shard, after taking some of its results
            next(results)
            raise KeyboardInterrupt
        calls.append(job.index)
        return real_write(out, split, job, listing, results, sums)

    monkeypatch.setattr(pp, "write_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pp.preprocess(src, tmp_path, config, progress=False)
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "train").glob("*.tar")}
    assert sorted(kept) == [f"train-{i:06d}.tar" for i in range(3)]
    assert not (tmp_path / "manifest.json").exists()
    # a crash between renaming the tar and writing its record, and a stale temporary file
    (tmp_path / "train" / "train-000004.tar").write_bytes(b"half")
    (tmp_path / "train" / "train-000005.tar.tmp").write_bytes(b"half")
    monkeypatch.setattr(pp, "write_shard", real_write)
    pp.preprocess(src, tmp_path, config, progress=False)
    assert output_bytes(tmp_path) == reference
    assert not list(tmp_path.glob("*/*.tmp"))
    for name, mtime in kept.items():  # finished shards were kept, not rewritten
        assert (tmp_path / "train" / name).stat().st_mtime_ns == mtime


def test_parts_are_disjoint_and_union_to_the_full_set(src, reference, tmp_path):
    shards = {}
    for i in (1, 2, 3):
        manifest = pp.preprocess(src, tmp_path, replace(CONFIG, part=(i, 3)), progress=False)
        now = {p.name for p in tmp_path.glob("*/*.tar")}
        shards[i] = now - set().union(*shards.values())
        assert all(int(n[-10:-4]) % 3 == i - 1 for n in shards[i])
        assert (manifest is None) == (i < 3)  # the last part writes the manifest
    assert output_bytes(tmp_path) == reference
    (tmp_path / "manifest.json").unlink()
    write_manifest(tmp_path)  # the explicit merge step gives the same manifest
    assert output_bytes(tmp_path) == reference


def test_merge_with_missing_parts_says_what_to_do(src, tmp_path):
    pp.preprocess(src, tmp_path, replace(CONFIG, part=(1, 2)), progress=False)
    with pytest.raises(DataError, match="not finished.*remaining preprocess parts"):
        write_manifest(tmp_path)


def test_changed_settings_refuse_to_mix_with_existing_shards(src, tmp_path):
    pp.preprocess(src, tmp_path, CONFIG, progress=False)
    with pytest.raises(DataError, match="other inputs or settings"):
        pp.preprocess(src, tmp_path, replace(CONFIG, seed=8), progress=False)


def test_symlink_farm_with_loop_neither_hangs_nor_duplicates(src, tmp_path):
    farm = tmp_path / "farm"
    for split in ("train", "val"):
        (farm / split).mkdir(parents=True)
        for cls in sorted((src / split).iterdir()):
            os.symlink(cls, farm / split / cls.name)  # symlinked class folders
    real = src / "train" / class_name(1)
    loop = real / "loop"
    os.symlink(real, loop)  # a folder containing a link to itself
    try:
        first = sorted(real.glob("*.JPEG"))[0]
        os.symlink(first, real / "again.JPEG")  # two paths to one file
        manifest = pp.preprocess(farm, tmp_path / "out", CONFIG, progress=False)
    finally:
        loop.unlink()
        (real / "again.JPEG").unlink()
    train = manifest["splits"]["train"]
    plain = SMALL.classes * SMALL.train_per_class + 9  # 9 odd files in class 0
    assert train["found"] == plain + 1 and train["reject_reasons"]["duplicate"] == 1
    assert train["written"] == plain - 3  # truncated, empty and text are rejected


def test_split_option_and_flat_val_with_labels_file(src, tmp_path):
    out = tmp_path / "out"
    pp.preprocess(src / "train", out, CONFIG, split="train", progress=False)
    flat, lines, expected = tmp_path / "flat_val", [], {}
    flat.mkdir()
    for n, path in enumerate(sorted((src / "val").glob("*/n*.JPEG")), 1):
        name = f"ILSVRC2012_val_{n:08d}.JPEG"
        shutil.copy(path, flat / name)
        lines.append(f"{name.split('.')[0]},{path.parent.name} 1 2 3 4")  # LOC_val_solution.csv
        expected[name] = int(path.parent.name[1:])
    (flat / "README.txt").write_text("no label for me")
    labels = tmp_path / "LOC_val_solution.csv"
    labels.write_text("ImageId,PredictionString\n" + "\n".join(lines) + "\n")
    manifest = pp.preprocess(flat, out, CONFIG, split="val", val_labels=labels, progress=False)
    val = manifest["splits"]["val"]
    assert (val["found"], val["written"], val["reject_reasons"]) == (
        len(expected) + 1, len(expected), {"no-label": 1})
    got = {}
    for record in sorted((out / "val").glob("val-*.json")):
        got.update({rel: key for key, rel in json.loads(record.read_text())["sources"]})
    labels_by_key = {}
    for shard in val["shards"]:
        with tarfile.open(out / shard["tar"]) as tar:
            labels_by_key.update({m.name.split(".")[0]: int(tar.extractfile(m).read())
                                  for m in tar if m.name.endswith(".cls")})
    # provenance names a flat val file `<class>/<file>`, as if sorted into class folders
    assert {name: labels_by_key[got[f"{class_name(c)}/{name}"]] for name, c in expected.items()} \
        == expected
    assert set(manifest["splits"]) == {"train", "val"}


def test_labels_file_with_unknown_class_is_a_clear_error(src, tmp_path):
    out = tmp_path / "out"
    pp.preprocess(src / "train", out, CONFIG, split="train", progress=False)
    labels = tmp_path / "val.txt"
    labels.write_text("a.JPEG n00000000\nb.JPEG n12345678\n")
    with pytest.raises(DataError, match=r"val.txt:2: class 'n12345678'"):
        pp.preprocess(src / "val", out, CONFIG, split="val", val_labels=labels, progress=False)


def test_fifo_is_rejected_instead_of_blocking(tmp_path):
    write_sample_data(tmp_path / "src", SampleDataConfig(classes=2, train_per_class=2,
                                                          val_per_class=0, min_side=40,
                                                          max_side=60))
    os.mkfifo(tmp_path / "src" / "train" / class_name(1) / "pipe.JPEG")
    manifest = pp.preprocess(tmp_path / "src", tmp_path / "out", CONFIG, progress=False)
    train = manifest["splits"]["train"]
    assert (train["found"], train["written"], train["reject_reasons"]) == (5, 4, {"unreadable": 1})
    assert "not a regular file" in (tmp_path / "out" / "train" / "rejects.tsv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["folders", "official"])
def test_resume_after_sigkill_of_the_cli(tmp_path, layout):
    """A real kill -9 mid-run: records mark complete shards; a re-run completes identically."""
    import signal
    import subprocess
    import sys
    import time

    from miniature import tar_bytes

    src = tmp_path / "src"
    write_sample_data(src, SampleDataConfig(classes=2, train_per_class=40, val_per_class=0,
                                            min_side=400, max_side=900, seed=1))
    if layout == "official":  # the same images as ILSVRC2012_img_train.tar, a tar of class tars
        inner = [(f"{d.name}.tar", tar_bytes([(p.name, p.read_bytes()) for p in sorted(
            d.iterdir())])) for d in sorted((src / "train").iterdir())]
        src = tmp_path / "official"
        src.mkdir()
        (src / "ILSVRC2012_img_train.tar").write_bytes(tar_bytes(inner))
    args = [sys.executable, "-m", "alexnet_dali.cli", "preprocess", str(src),
            "--shard-size", "2", "--workers", "1", "--quiet"]
    subprocess.run([*args[:5], str(tmp_path / "ref"), *args[5:]], check=True,
                   capture_output=True)
    proc = subprocess.Popen([*args[:5], str(tmp_path / "out"), *args[5:]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "out").glob("train/train-*.json"))) < 5:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    records = sorted((tmp_path / "out" / "train").glob("train-*.json"))
    assert 5 <= len(records) < 40 and not (tmp_path / "out" / "manifest.json").exists()
    for record in records:  # every shard that claims to be complete is
        tar = record.with_suffix(".tar").name
        assert (tmp_path / "out" / "train" / tar).read_bytes() == \
            (tmp_path / "ref" / "train" / tar).read_bytes()
    subprocess.run([*args[:5], str(tmp_path / "out"), *args[5:]], check=True,
                   capture_output=True)
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "ref")


@pytest.mark.slow
def test_ctrl_c_says_that_rerunning_resumes_and_exits_130(tmp_path):
    """SIGINT to the process group (a terminal's Ctrl-C reaches the worker processes too): one
    line saying the finished shards are kept and how to resume, exit 130; re-running completes."""
    import signal
    import subprocess
    import sys
    import time

    write_sample_data(tmp_path / "src", SampleDataConfig(classes=2, train_per_class=40,
                                                          val_per_class=0, min_side=400,
                                                          max_side=900, seed=1))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "alexnet_dali.cli", "preprocess", str(tmp_path / "src"),
            str(out), "--shard-size", "2", "--workers", "2", "--quiet"]
    # A shell's background job starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default, as a terminal's foreground job has.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list(out.glob("train/train-*.json"))) < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    src = tmp_path / "src"
    assert stderr.splitlines() == [
        f"layout: folders (detected from {src}; --layout NAME overrides)",
        f"note: class words from {src}/synset_words.txt",
        f"interrupted: finished shards in {out} are kept; run the same command again to resume"]
    assert not (out / "manifest.json").exists()
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "train: found 80 = written 80 + rejected 0" in done.stdout


def test_regular_files_keeps_the_first_path_of_a_file_and_rejects_in_path_order(tmp_path):
    from alexnet_dali.tools.scan import regular_files

    for name in ("a.JPEG", "c.JPEG"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "a.JPEG", tmp_path / "b.JPEG")
    os.symlink(tmp_path / "a.JPEG", tmp_path / "d.JPEG")
    os.mkfifo(tmp_path / "e.JPEG")
    rejects = []
    kept = regular_files(tmp_path, ["a.JPEG", "b.JPEG", "c.JPEG", "d.JPEG", "e.JPEG",
                                    "gone.JPEG"], rejects)
    assert kept == ["a.JPEG", "c.JPEG"]
    assert [(r.rel, r.reason) for r in rejects] == [
        ("b.JPEG", "duplicate"), ("d.JPEG", "duplicate"), ("e.JPEG", "unreadable"),
        ("gone.JPEG", "unreadable")]
    assert rejects[0].detail == rejects[1].detail == "same file as a.JPEG"
