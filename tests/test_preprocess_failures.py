"""preprocess on a full disk (the one error line, then a re-run that ends byte-identical to an
uninterrupted run), a part that a live process is building, and leftovers of dead processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from faults import DEAD_PID, Holder, failing_nth, limited
from helpers import output_bytes

from alexnet_dali.tools import records as rc
from alexnet_dali.tools import outdir
from alexnet_dali.tools import preprocess as pp
from alexnet_dali.tools import shards as shards_module
from alexnet_dali.tools.sample_data import SampleDataConfig, write_sample_data

SMALL = SampleDataConfig(classes=3, train_per_class=10, val_per_class=3, min_side=48,
                         max_side=160, seed=5)
CONFIG = pp.PreprocessConfig(shard_size=4, workers=1, seed=7)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("failures_src")
    write_sample_data(root, SMALL)
    return root


@pytest.fixture(scope="module")
def reference(src, tmp_path_factory) -> dict[str, bytes]:
    """One uninterrupted run."""
    out = tmp_path_factory.mktemp("failures_ref")
    pp.preprocess(src, out, CONFIG, progress=False)
    return output_bytes(out)


def assert_nothing_half_done(out: Path, reference: dict[str, bytes]) -> None:
    """No temporaries; every shard that has a record is complete and final; no manifest."""
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / "manifest.json").exists()
    for record in out.glob("*/*-*.json"):
        tar = record.with_suffix(".tar")
        assert tar.read_bytes() == reference[tar.relative_to(out).as_posix()]


@pytest.mark.parametrize("where, n, named", [
    ("tar write", 5, r"train-000001\.tar\.tmp"),
    ("tar fsync", 10, r"train-000002\.tar\.tmp"),
    ("index fsync", 11, r"train-000002\.idx\.tmp"),
    ("pixel sums fsync", 12, r"train-000002\.sums\.npy\..+\.tmp"),
    ("record fsync", 13, r"train-000002\.json\..+\.tmp"),
])
def test_disk_full_while_writing_then_a_rerun_is_byte_identical(src, reference, tmp_path,
                                                                monkeypatch, where, n, named):
    calls: list = []
    if where == "tar write":  # inside a shard: the 5th sample written overall
        target = shards_module.ShardWriter
        monkeypatch.setattr(target, "write_blocks", failing_nth(target.write_blocks, n, calls))
    else:  # fsyncs: the plan (1), then per train shard tar, index, pixel sums (--pca), record:
        # shard 2's are 10, 11, 12, 13
        monkeypatch.setattr(os, "fsync", failing_nth(os.fsync, n, calls))
    with pytest.raises(outdir.OutputError, match=rf"^{tmp_path}/train/{named}: No space left on "
                                                 r"device; free space on that filesystem, then "
                                                 r"re-run the same command: it resumes"):
        pp.preprocess(src, tmp_path, CONFIG, progress=False)
    assert_nothing_half_done(tmp_path, reference)
    monkeypatch.undo()
    pp.preprocess(src, tmp_path, CONFIG, progress=False)
    assert output_bytes(tmp_path) == reference


def test_cli_file_size_limit_is_one_error_line_then_a_rerun_completes(src, reference, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "alexnet_dali.cli", "preprocess", str(src), str(out),
            "--shard-size", str(CONFIG.shard_size), "--workers", "1", "--seed", str(CONFIG.seed),
            "--quiet"]
    biggest = max(len(v) for k, v in reference.items() if k.endswith(".tar"))
    cut = subprocess.run(args, capture_output=True, text=True, preexec_fn=limited(biggest - 1))
    assert cut.returncode == 2, cut.stderr
    lines = [x for x in cut.stderr.strip().splitlines() if not x.startswith(("layout:", "note:"))]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out / 'train'}/train-00"), lines
    assert "File too large; a file-size limit stopped it" in lines[0]
    assert lines[0].endswith("then re-run the same command: it resumes (finished shards are kept)")
    assert_nothing_half_done(out, reference)
    subprocess.run(args, check=True, capture_output=True)
    assert output_bytes(out) == reference


def test_a_part_being_built_by_a_live_process_is_refused(src, reference, tmp_path):
    holder = Holder(f"""
        from pathlib import Path
        from alexnet_dali.tools.records import lock_part
        lock_part(Path({str(tmp_path)!r}), "train", (1, 2))
    """)
    try:
        with pytest.raises(outdir.FolderInUse, match=rf"in use by PID {holder.pid} .*part 1/2"):
            pp.preprocess(src, tmp_path, replace(CONFIG, part=(1, 2)), progress=False)
        with pytest.raises(outdir.FolderInUse, match=rf"PID {holder.pid} .* is building it as "
                                                     r"part-1-of-2; .* --part i/2"):
            pp.preprocess(src, tmp_path, replace(CONFIG, part=(2, 3)), progress=False)
        # another part of the same n shares OUT with it: that is what --part is for
        assert pp.preprocess(src, tmp_path, replace(CONFIG, part=(2, 2)), progress=False) is None
    finally:
        holder.kill()
    planted = tmp_path / "train" / f"_plan.json.{socket.gethostname()}.{DEAD_PID}.tmp"
    planted.write_text("{")
    assert pp.preprocess(src, tmp_path, replace(CONFIG, part=(1, 2)), progress=False) is not None
    assert not planted.exists()
    assert output_bytes(tmp_path) == reference
    assert rc.all_shards_done(tmp_path)
