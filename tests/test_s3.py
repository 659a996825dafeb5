"""Shards in object storage, over HTTP to a real S3-compatible server on 127.0.0.1 (moto_server,
`tests/s3server.py`): train, eval, verify, pca-stats, predict and bench read `s3://` exactly as
they read the local copy, and every way the storage can fail is one error line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import overwrite_middle_of_jpeg
from s3server import S3, free_port, start_server, stop_server

from alexnet_dali.cli import main
from alexnet_dali.tools import storage

pytestmark = pytest.mark.slow

# fc_width 64: checkpoints of 25 MB, not 455 (the suite's temp folder stays under 1 GB)
TINY = ('epochs = 1\nbatch_size = 8\nmax_steps_per_epoch = 3\nlog_every = 1\nseed = 5\n'
        '[model]\ninit = "he"\nfc_width = 64\n[optim]\nlr = 0.001\n[loader]\nnum_threads = 1\n'
        '[augment]\nstd_normalize = true\n')


def cli(*args: str):
    """Run the CLI in this process (the session's server, through boto3 and DALI)."""
    return CliRunner().invoke(main, list(args))


def cli_process(args: list[str], env: dict[str, str], timeout: float = 600):
    """Run the CLI in a process of its own (DALI's S3 client reads its endpoint once a
    process, so a test with its own server runs the command in a new one)."""
    return subprocess.run([sys.executable, "-m", "alexnet_dali.cli", *args], text=True,
                          capture_output=True, env={**os.environ, **env}, timeout=timeout)


def one_error_line(result) -> str:
    """The only line of stderr, which must be an `error:` line (exit status 2)."""
    text = result.stderr if hasattr(result, "returncode") else result.output
    code = result.returncode if hasattr(result, "returncode") else result.exit_code
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def train_losses(run_dir: Path) -> list[float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x["kind"] == "train"]


def test_train_eval_predict_from_s3_equal_the_local_copy(shard_dataset, s3_shards, raw_dataset,
                                                         tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    runs = {}
    for where, data in (("local", str(shard_dataset)), ("s3", s3_shards)):
        runs[where] = tmp_path / where
        done = cli("train", data, "--config", str(config), "--run-dir", str(runs[where]),
                   "--device", "cpu", "--threads", "1", "--model-parallel")
        assert done.exit_code == 0, done.output
    assert train_losses(runs["s3"]) == train_losses(runs["local"])
    assert len(train_losses(runs["local"])) == 3

    scores = {}
    for where, data in (("local", str(shard_dataset)), ("s3", s3_shards)):
        out = tmp_path / f"eval-{where}.json"
        done = cli("eval", data, "--checkpoint", str(runs["local"]), "--tencrop", "--device",
                   "cpu", "--batch-size", "8", "--json", str(out))
        assert done.exit_code == 0, done.output
        scores[where] = json.loads(out.read_text())
    assert scores["s3"]["samples"] == 32 and scores["s3"]["views"] == 10
    for key in ("top1_err", "top5_err", "loss"):
        assert scores["s3"][key] == scores["local"][key], key

    photo = str(sorted((raw_dataset / "val").glob("*/*"))[0])
    preds = {}
    for where, data in (("local", str(shard_dataset)), ("s3", s3_shards)):
        out = tmp_path / f"pred-{where}.json"
        done = cli("predict", photo, "--checkpoint", str(runs["local"]), "--data", data,
                   "--device", "cpu", "--json", str(out))
        assert done.exit_code == 0, done.output
        preds[where] = json.loads(out.read_text())[0]["top"]
    assert preds["s3"] == preds["local"]


def test_verify_names_a_damaged_remote_shard(s3, shard_dataset, tmp_path):
    url = s3.upload(shard_dataset, "verify", "copy")
    clean = cli("verify", url, "--decode", "--quiet", "--workers", "2")
    assert clean.exit_code == 0 and "all 8 shards are intact" in clean.output, clean.output
    damaged = Path(shutil.copy(shard_dataset / "train" / "train-000001.tar", tmp_path))
    key, _ = overwrite_middle_of_jpeg(damaged, sample=3)  # same size, tar structure intact
    s3.client().upload_file(str(damaged), "verify", "copy/train/train-000001.tar")
    bad = cli("verify", url, "--decode", "--quiet", "--workers", "1")
    assert bad.exit_code == 1, bad.output
    tar = f"{url}/train/train-000001.tar"
    assert f"{tar}: sha256 differs from manifest.json" in bad.output
    assert f"{tar}: sample {key}: JPEG does not decode cleanly" in bad.output
    assert "1 of 8 shards have problems (2 found)" in bad.output


def test_pca_stats_on_s3_writes_what_it_writes_locally(s3, shard_dataset):
    url = s3.upload(shard_dataset, "pca", "copy")
    client = s3.client()
    client.delete_object(Bucket="pca", Key="copy/pca.json")
    client.delete_object(Bucket="pca", Key="copy/mean_image.npy")
    done = cli("pca-stats", url, "--workers", "2", "--quiet")
    assert done.exit_code == 0, done.output
    remote = client.get_object(Bucket="pca", Key="copy/pca.json")["Body"].read()
    assert remote == (shard_dataset / "pca.json").read_bytes()
    image = client.get_object(Bucket="pca", Key="copy/mean_image.npy")["Body"].read()
    assert image == (shard_dataset / "mean_image.npy").read_bytes()


def test_bench_pipeline_times_local_and_remote_side_by_side(shard_dataset, s3_shards):
    done = cli("bench", "pipeline", "--data", str(shard_dataset), "--remote", s3_shards,
               "--skip-reference", "--batch-size", "8", "--batches", "2", "--reps", "2",
               "--threads", "1", "--warmup", "0")
    assert done.exit_code == 0, done.output
    assert f"| DALI from {s3_shards} |" in done.output and "| DALI (cpu) |" in done.output
    assert f"DALI from {s3_shards} / DALI (cpu) (medians):" in done.output
    assert "KiB per train image in the shards" in done.output


def test_missing_bucket_and_prefix_are_one_error_line_each(s3_shards, tmp_path):
    line = one_error_line(cli("verify", "s3://no-such-bucket/shards"))
    assert line.startswith("error: s3://no-such-bucket/shards/manifest.json: there is no bucket "
                           "'no-such-bucket' at http://127.0.0.1:")
    assert "AWS_ENDPOINT_URL" in line
    bucket = s3_shards.rsplit("/", 1)[0]
    line = one_error_line(cli("train", f"{bucket}/nothing-here", "--run-dir",
                              str(tmp_path / "run"), "--device", "cpu"))
    assert line.startswith(f"error: {bucket}/nothing-here/manifest.json: not found (nothing is "
                           f"stored under {bucket}/nothing-here/)")
    assert f"aws s3 sync SHARDS {bucket}/nothing-here" in line
    assert not (tmp_path / "run").exists()


def test_preprocess_into_s3_says_to_upload_a_local_folder(raw_dataset):
    line = one_error_line(cli("preprocess", str(raw_dataset), "s3://bucket/shards"))
    assert line == ("error: s3://bucket/shards: preprocess writes to a local folder; preprocess "
                    "into one, then upload it: `aws s3 sync SHARDS s3://bucket/shards` "
                    "(docs/DATA.md)")


def test_refused_credentials_are_one_error_line(shard_dataset):
    process, endpoint = start_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:  # this server checks every key against its IAM users: it has none
        env = {**S3(endpoint).env(), "AWS_MAX_ATTEMPTS": "1"}
        done = cli_process(["verify", "s3://any-bucket/shards", "--quiet"], env)
    finally:
        stop_server(process)
    line = one_error_line(done)
    assert line.startswith(f"error: s3://any-bucket/shards/manifest.json: {endpoint} refused the "
                           "credentials (InvalidAccessKeyId")
    assert "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line


def test_an_unreachable_endpoint_is_one_error_line(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**S3(endpoint).env(), "AWS_MAX_ATTEMPTS": "1"}
    done = cli_process(["eval", "s3://shards/tiny", "--checkpoint", str(tmp_path),
                        "--tencrop"], env)
    line = one_error_line(done)
    assert line.startswith(f"error: s3://shards/tiny/manifest.json: cannot reach {endpoint} (")
    assert "check AWS_ENDPOINT_URL and the network" in line


def test_without_boto3_s3_urls_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if it were not installed
    storage.forget_client()
    try:
        line = one_error_line(cli("verify", "s3://shards/tiny"))
    finally:
        storage.forget_client()  # the next test makes a client with boto3 again
    assert line == "error: s3:// URLs need boto3: pip install 'alexnet-dali[s3]'"


def test_a_server_gone_mid_epoch_stops_with_a_checkpoint_that_resumes_exactly(shard_dataset,
                                                                            tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(TINY.replace("max_steps_per_epoch = 3", "max_steps_per_epoch = 12")
                      .replace("epochs = 1", "epochs = 2").replace("batch_size = 8",
                                                                    "batch_size = 4"))
    common = ["--config", str(config), "--device", "cpu", "--threads", "1"]
    whole = tmp_path / "whole"
    done = cli_process(["train", str(shard_dataset), "--run-dir", str(whole), *common], {})
    assert done.returncode == 0, done.stderr[-3000:]

    port = free_port()
    process, endpoint = start_server(port)
    server = S3(endpoint)
    url = server.upload(shard_dataset, "gone", "shards")
    cut = tmp_path / "cut"
    env = {**server.env(), "AWS_MAX_ATTEMPTS": "1"}
    train = subprocess.Popen([sys.executable, "-m", "alexnet_dali.cli", "train", url,
                              "--run-dir", str(cut), *common], text=True,
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             env={**os.environ, **env})
    try:
        metrics = cut / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and train.poll() is None and not (
                metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            time.sleep(0.2)
        stop_server(process)  # the endpoint goes away two steps into the run
        _, stderr = train.communicate(timeout=300)
    finally:
        if train.poll() is None:
            train.kill()
        if process.poll() is None:
            stop_server(process)
    # the error line is the last thing written, right after the progress bar's last state
    lines = [x for x in stderr[stderr.find("error: "):].splitlines() if x.strip()]
    assert train.returncode == 2 and len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"error: {url}: DALI could not read the ")
    assert "saved " in lines[0] and "run the same command with --resume" in lines[0]

    process, endpoint = start_server(port)  # the storage is back (moto keeps nothing: upload)
    try:
        S3(endpoint).upload(shard_dataset, "gone", "shards")
        again = cli_process(["train", url, "--run-dir", str(cut), *common, "--resume"], env)
    finally:
        stop_server(process)
    assert again.returncode == 0, again.stderr[-3000:]
    from alexnet_dali.model.checkpoint import latest_checkpoint

    a = torch.load(latest_checkpoint(whole), weights_only=True)
    b = torch.load(latest_checkpoint(cut), weights_only=True)
    assert a["global_step"] == b["global_step"] == 24
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def test_open_store_reads_urls_and_paths():
    store = storage.open_store("s3://bucket/a/b/")
    assert (store.bucket, store.prefix, str(store)) == ("bucket", "a/b", "s3://bucket/a/b")
    assert store.url("train/x.tar") == "s3://bucket/a/b/train/x.tar"
    assert str(storage.open_store("s3://bucket")) == "s3://bucket"
    assert storage.open_store("/data/shards").url("manifest.json") == "/data/shards/manifest.json"
    with pytest.raises(storage.StorageError, match="no bucket named"):
        storage.open_store("s3://")
    np.testing.assert_equal(storage.is_remote("s3://b"), True)
