"""The CLI end to end on the tiny shard fixture: train -> eval --tencrop -> figures."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from alexnet_dali.cli import main

pytestmark = pytest.mark.slow


def test_train_eval_tencrop_figures_predict_export(shard_dataset, raw_dataset, tmp_path):
    run_dir = tmp_path / "run"
    config = tmp_path / "tiny.toml"
    config.write_text('epochs = 1\nbatch_size = 8\nmax_steps_per_epoch = 2\nlog_every = 1\n'
                      '[model]\ninit = "he"\n[optim]\nlr = 0.001\n[loader]\nnum_threads = 1\n')
    runner = CliRunner()
    train = runner.invoke(main, ["train", str(shard_dataset), "--config", str(config),
                                 "--run-dir", str(run_dir), "--device", "cpu", "--threads", "2",
                                 "--set", "augment.std_normalize=true"])
    assert train.exit_code == 0, train.output
    said = train.stdout.splitlines()
    assert re.fullmatch(r"epoch 1: val loss \d+\.\d{4} top-1 err [01]\.\d{4}; train loss "
                        r"\d+\.\d{4} top-1 err [01]\.\d{4}; saved ckpt-0001-0000002\.pt "
                        r"\(45\d MB\)", said[-6]), said[-6]  # no top-5 with 4 classes
    best = run_dir / "checkpoints" / "ckpt-0001-0000002.pt"
    assert re.fullmatch(r"done: 1 epoch in \d+ (min \d+ )?s", said[-5]), said[-5]
    assert said[-4].startswith("best: val top-1 err ") and said[-4].endswith(
        f" after epoch 1 ({best})")
    assert re.fullmatch(rf"checkpoints: 1 in {run_dir}/checkpoints, 45\d MB \(--keep-checkpoints "
                        r"N keeps the newest N\)", said[-3]), said[-3]
    assert said[-2:] == [f"next: alexnet-dali eval {shard_dataset} --checkpoint {run_dir} "
                         "--tencrop", f"next: alexnet-dali figures {run_dir}"]
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["batch_size"] == 8 and resolved["model"]["num_classes"] == 4
    assert resolved["augment"]["std_normalize"] is True and resolved["data"] == str(shard_dataset)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["train", "train", "val"]
    assert lines[1] | {"loss": 0, "top1_err": 0, "lr": 0, "images_per_s": 0} == {
        "kind": "train", "epoch": 1, "step": 2, "loss": 0, "top1_err": 0, "lr": 0,
        "images_per_s": 0}
    assert lines[1]["top1_err"] * 8 in range(9)  # one step of 8 images since the last line
    assert set(lines[2]) == {"kind", "epoch", "step", "loss", "top1_err", "top5_err"}
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt-0001-0000002.pt"]
    from alexnet_dali.model.checkpoint import load_checkpoint

    manifest = json.loads((shard_dataset / "manifest.json").read_text())
    assert load_checkpoint(run_dir)["classes"] == [[c["name"], c["words"]]
                                                   for c in manifest["classes"]]

    out = tmp_path / "eval.json"
    ev = runner.invoke(main, ["eval", str(shard_dataset), "--checkpoint", str(run_dir),
                              "--tencrop", "--json", str(out), "--device", "cpu",
                              "--batch-size", "8"])
    assert ev.exit_code == 0, ev.output
    result = json.loads(out.read_text())
    assert result["views"] == 10 and result["samples"] == 32 and result["epoch"] == 1
    assert result["top1_err"] == pytest.approx(1 - result["top1_acc"])
    assert "top-1 err" in ev.output
    assert (f"scored {run_dir}/checkpoints/ckpt-0001-0000002.pt (epoch 1, global step 2) on val "
            f"of {shard_dataset}, ten-crop:") in ev.output

    figures = runner.invoke(main, ["figures", str(run_dir), "--train-images", "16",
                                   "--queries", "2", "--neighbours", "3"])
    assert figures.exit_code == 0, figures.output
    for name in ("curves.png", "conv1_filters.png", "fc7_neighbours.png"):
        assert (run_dir / "figures" / name).stat().st_size > 1000, name

    # the trainer records the training data's colour statistics for predict and export
    import torch

    ckpt = torch.load(next((run_dir / "checkpoints").iterdir()), weights_only=True)
    pca = json.loads((shard_dataset / "pca.json").read_text())
    assert ckpt["colour_stats"]["std"] == pca["std"]
    photos = sorted((raw_dataset / "val").glob("*/*"))[:2]
    preds = tmp_path / "preds.json"
    predict = runner.invoke(main, ["predict", *map(str, photos), "--checkpoint", str(run_dir),
                                   "--json", str(preds), "--device", "cpu", "--topk", "3"])
    assert predict.exit_code == 0, predict.output
    assert [len(entry["top"]) for entry in json.loads(preds.read_text())] == [3, 3]
    export = runner.invoke(main, ["export", str(tmp_path / "alexnet.pt"), "--checkpoint",
                                  str(run_dir)])
    assert export.exit_code == 0, export.output
    info = json.loads((tmp_path / "alexnet.pt.json").read_text())
    assert info["normalization_folded_in"]["std_rgb"] != [1.0, 1.0, 1.0]  # std_normalize=true
    assert [(c["name"], c["wnid"]) for c in info["classes"]] == [
        (words, f"n{i:08d}") for i, words in enumerate(["disc", "square", "triangle", "cross"])]


def test_resume_with_another_batch_size_is_refused(shard_dataset, tmp_path):
    from alexnet_dali.model.checkpoint import new_state, save_checkpoint
    from alexnet_dali.config.schema import ModelConfig, TrainConfig
    from alexnet_dali.tools.manifest import read_manifest

    cfg = TrainConfig(data=str(shard_dataset), batch_size=8, model=ModelConfig(num_classes=4))
    save_checkpoint(tmp_path, new_state(model={}, config=cfg, epoch=0, global_step=1,
                                        step_in_epoch=1,
                                        manifest_sha256=read_manifest(shard_dataset).sha256),
                    keep=1)
    result = CliRunner().invoke(main, ["train", str(shard_dataset), "--run-dir", str(tmp_path),
                                       "--resume", "--batch-size", "16", "--device", "cpu"])
    assert result.exit_code == 2
    assert "global batch size 8 -> 16" in result.output and "--allow-mismatch" in result.output
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before any training step
    fresh = CliRunner().invoke(main, ["train", str(shard_dataset), "--run-dir", str(tmp_path)])
    assert fresh.exit_code == 2 and "already holds checkpoints" in fresh.output


def test_bench_train_prints_both_sources_and_their_ratio(shard_dataset, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "train", str(shard_dataset), "--batch-size", "2",
                                       "--steps", "1", "--warmup", "0", "--device", "cpu",
                                       "--workers", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.output and "ratio DALI/synthetic" in result.output
    numbers = json.loads(out.read_text())
    assert numbers["synthetic_images_per_s"] > 0 and numbers["dali_images_per_s"] > 0
    assert numbers["ratio"] == pytest.approx(
        numbers["dali_images_per_s"] / numbers["synthetic_images_per_s"])


def test_model_parallel_run_saves_the_grouped_layout_that_eval_reads(tmp_path):
    import torch

    from alexnet_dali.model.checkpoint import latest_checkpoint
    from alexnet_dali.config.schema import ModelConfig
    from alexnet_dali.model.alexnet import build_model

    runner = CliRunner()
    train = runner.invoke(main, ["train", "synthetic", "--run-dir", str(tmp_path), "--device",
                                 "cpu", "--model-parallel", "--batch-size", "2", "--epochs", "1",
                                 "--max-steps-per-epoch", "1", "--init", "he", "--lr", "0.001",
                                 "--set", "model.num_classes=4"])
    assert train.exit_code == 0, train.output
    assert "model-parallel: tower 1 on cpu, tower 2 on cpu (the split network on the CPU, for " \
           "testing" in train.output
    state = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert state["devices"] == ["cpu", "cpu"]  # what ran, beside config's model_parallel
    grouped = build_model(ModelConfig(num_classes=4)).state_dict()
    assert {k: v.shape for k, v in state["model"].items()} == {
        k: v.shape for k, v in grouped.items()}
    ev = runner.invoke(main, ["eval", "synthetic", "--checkpoint", str(tmp_path), "--device",
                              "cpu", "--batch-size", "2"])
    assert ev.exit_code == 0, ev.output


def test_allow_mismatch_resumes_weights_with_another_batch_size(tmp_path):
    import torch

    from alexnet_dali.model.checkpoint import latest_checkpoint

    runner = CliRunner()
    common = ["--run-dir", str(tmp_path), "--device", "cpu", "--max-steps-per-epoch", "1",
              "--init", "he", "--lr", "0.001"]
    first = runner.invoke(main, ["train", "synthetic", *common, "--batch-size", "2", "--epochs",
                                 "1", "--set", "model.num_classes=4", "--set", "model.fc_width=64"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(main, ["train", "synthetic", *common, "--batch-size", "4", "--epochs",
                                 "2", "--resume", "--allow-mismatch"])
    assert again.exit_code == 0, again.output
    state = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert (state["epoch"], state["global_step"], state["config"]["batch_size"]) == (2, 2, 4)


def test_data_problems_are_clean_errors_not_tracebacks(shard_dataset, tmp_path):
    """A missing data dir, a batch larger than the data and an unknown split: exit 2, a message."""
    from alexnet_dali.model.checkpoint import new_state, save_checkpoint
    from alexnet_dali.config.schema import ModelConfig, TrainConfig
    from alexnet_dali.model.alexnet import build_model

    runner = CliRunner()
    missing = runner.invoke(main, ["train", str(tmp_path / "nowhere"), "--run-dir",
                                   str(tmp_path / "r1"), "--device", "cpu"])
    assert missing.exit_code == 2, missing.output
    assert "nowhere/manifest.json" in missing.output and "preprocess" in missing.output
    too_big = runner.invoke(main, ["train", str(shard_dataset), "--run-dir", str(tmp_path / "r2"),
                                   "--device", "cpu", "--batch-size", "1024"])
    assert too_big.exit_code == 2, too_big.output
    assert "fewer than one global batch" in too_big.output
    cfg = TrainConfig(data=str(shard_dataset), model=ModelConfig(num_classes=4))
    save_checkpoint(tmp_path / "r3", new_state(model=build_model(cfg.model).state_dict(),
                                               config=cfg, epoch=0, global_step=1), keep=1)
    no_split = runner.invoke(main, ["eval", str(shard_dataset), "--checkpoint",
                                    str(tmp_path / "r3"), "--split", "test", "--device", "cpu"])
    assert no_split.exit_code == 2, no_split.output
    assert "no split 'test'" in no_split.output


def test_truncated_epochs_all_have_max_steps(shard_dataset, tmp_path):
    """96 train images, batch 32: 3 steps an epoch; --max-steps-per-epoch 2 gives 2 every epoch,
    also when the loader's own epoch ends inside one (the 2nd epoch here)."""
    runner = CliRunner()
    train = runner.invoke(main, ["train", str(shard_dataset), "--run-dir", str(tmp_path),
                                 "--device", "cpu", "--threads", "2", "--workers", "1",
                                 "--batch-size", "32", "--epochs", "2", "--max-steps-per-epoch",
                                 "2", "--log-every", "1", "--init", "he", "--lr", "0.001",
                                 "--std-normalize", "--set", "model.fc_width=64"])
    assert train.exit_code == 0, train.output
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(x["kind"], x["epoch"], x["step"]) for x in lines] == [
        ("train", 1, 1), ("train", 1, 2), ("val", 1, 2),
        ("train", 2, 3), ("train", 2, 4), ("val", 2, 4)]


def test_a_checkpoint_from_before_parameter_groups_is_refused_then_resumed_with_a_fresh_momentum(
        tmp_path):
    import torch

    from alexnet_dali.model.checkpoint import latest_checkpoint
    from alexnet_dali.model.alexnet import build_model
    from alexnet_dali.model.checkpoint import config_from_checkpoint

    runner = CliRunner()
    common = ["--run-dir", str(tmp_path), "--device", "cpu", "--max-steps-per-epoch", "1",
              "--init", "he", "--lr", "0.001", "--batch-size", "2"]
    first = runner.invoke(main, ["train", "synthetic", *common, "--epochs", "1",
                                 "--set", "model.num_classes=4", "--set", "model.fc_width=64"])
    assert first.exit_code == 0, first.output
    path = latest_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    # What an older version saved: one parameter group, no lrn_formula / bias_decay keys.
    del state["config"]["model"]["lrn_formula"], state["config"]["optim"]["bias_decay"]
    model = build_model(config_from_checkpoint({"config": state["config"]}).model)
    state["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9).state_dict()
    torch.save(state, path)

    refused = runner.invoke(main, ["train", "synthetic", *common, "--epochs", "2", "--resume"])
    assert refused.exit_code == 2, refused.output
    assert "parameter groups [16] -> [8, 8]" in refused.output
    assert "--allow-mismatch" in refused.output
    again = runner.invoke(main, ["train", "synthetic", *common, "--epochs", "2", "--resume",
                                 "--allow-mismatch"])
    assert again.exit_code == 0, again.output
    assert "fresh optimizer state" in again.output
    resolved = json.loads((tmp_path / "config.json").read_text())
    # The old run goes on as it was trained: LRN read literally, biases decayed.
    assert resolved["model"]["lrn_formula"] == "text" and resolved["optim"]["bias_decay"] is True


@pytest.mark.parametrize("top1_err", [0.75, 0.5])
def test_a_run_at_chance_after_three_epochs_gets_one_note(tmp_path, monkeypatch, top1_err):
    """Validation is replaced by a fixed result: at chance (4 classes: 0.75) the note comes once,
    after epoch 3, pointing to the short-run recipe; clearly below chance it never comes."""
    import alexnet_dali.train.loop as trainer

    monkeypatch.setattr(trainer, "evaluate", lambda *args, **kwargs: {
        "loss": 1.386, "top1_err": top1_err, "top5_err": 0.0, "samples": 1000})
    train = CliRunner().invoke(main, ["train", "synthetic", "--run-dir", str(tmp_path),
                                      "--device", "cpu", "--batch-size", "2", "--epochs", "4",
                                      "--max-steps-per-epoch", "1", "--lr", "1e-9",
                                      "--keep-checkpoints", "1", "--set", "model.fc_width=64",
                                      "--set", "model.num_classes=4"])
    assert train.exit_code == 0, train.output
    notes = [line for line in train.output.splitlines() if line.startswith("note: after")]
    if top1_err == 0.75:
        assert notes == ["note: after 3 epochs the val top-1 error 0.750 is at chance (0.750 "
                         "for 4 classes). The paper's recipe (biases of 1, lr 0.01, plateau "
                         "schedule) stalls on few classes and short runs: add --config short-run "
                         "(docs/TRAINING.md)"]
        lines = train.output.splitlines()
        after = lines[lines.index(notes[0]) - 1]
        assert after.startswith("epoch 3: val loss 1.3860 top-1 err 0.7500"), after
    else:
        assert notes == []


@pytest.mark.parametrize("given, says", [
    ("raw", "raw holds source images, not shards; run `alexnet-dali preprocess {raw} "
            "{tmp}/raw-shards` first, then `alexnet-dali train {tmp}/raw-shards`"),
    ("raw/train", "raw/train holds source images, not shards; run `alexnet-dali preprocess {raw} "
                  "{tmp}/raw-shards` first, then `alexnet-dali train {tmp}/raw-shards`"),
    ("shards/train", "shards/train is the 'train' folder inside the shard folder {tmp}/shards; "
                     "use the shard folder: `alexnet-dali train {tmp}/shards`"),
])
def test_train_on_the_wrong_folder_says_exactly_what_to_run(tmp_path, given, says):
    (tmp_path / "raw" / "train" / "n01").mkdir(parents=True)
    (tmp_path / "raw" / "train" / "n01" / "x.JPEG").write_bytes(b"")
    (tmp_path / "shards" / "train").mkdir(parents=True)
    (tmp_path / "shards" / "manifest.json").write_text("{}")
    result = CliRunner().invoke(main, ["train", str(tmp_path / given), "--run-dir",
                                       str(tmp_path / "run")])
    assert result.exit_code == 2
    expected = says.format(raw=tmp_path / "raw", tmp=tmp_path)
    assert result.output == f"error: {tmp_path / given}/manifest.json: not found: {tmp_path}/" \
                            f"{expected}\n"
    assert not (tmp_path / "raw-shards").exists() and not (tmp_path / "run").exists()


def test_an_older_checkpoint_resumes_and_evaluates(tmp_path):
    """Checkpoints from before the design pass: an empty `scaler` entry and loader.batch_size in
    the config. Both are dropped on read; resume and eval work."""
    import torch

    from alexnet_dali.model.checkpoint import latest_checkpoint

    runner = CliRunner()
    common = ["--run-dir", str(tmp_path), "--device", "cpu", "--max-steps-per-epoch", "1",
              "--init", "he", "--lr", "0.001", "--batch-size", "2"]
    first = runner.invoke(main, ["train", "synthetic", *common, "--epochs", "1",
                                 "--set", "model.num_classes=4", "--set", "model.fc_width=64"])
    assert first.exit_code == 0, first.output
    path = latest_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state["scaler"] = {}
    state["config"]["loader"]["batch_size"] = 2
    torch.save(state, path)
    again = runner.invoke(main, ["train", "synthetic", *common, "--epochs", "2", "--resume"])
    assert again.exit_code == 0, again.output
    resumed = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert (resumed["epoch"], resumed["global_step"]) == (2, 2) and "scaler" not in resumed
    ev = runner.invoke(main, ["eval", "synthetic", "--checkpoint", str(path), "--device", "cpu",
                              "--batch-size", "2"])
    assert ev.exit_code == 0, ev.output
