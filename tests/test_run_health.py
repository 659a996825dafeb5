"""Training tells the truth, through the CLI: a diverging run stops with exit 3 and keeps only
finite checkpoints; eval/predict/export refuse non-finite weights; a resume that would change the
network is refused and other changes are printed; checkpoints meet images too small for them with
one error line; a run that does not learn says so early (train/health.py, train/resume.py,
model/checkpoint.py)."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from alexnet_dali.model.checkpoint import (
    first_nonfinite,
    list_checkpoints,
    new_state,
    save_checkpoint,
)
from alexnet_dali.cli import main
from alexnet_dali.config.schema import ModelConfig, TrainConfig
from alexnet_dali.errors import CheckpointError
from alexnet_dali.train.health import Health
from alexnet_dali.model.alexnet import build_model

pytestmark = pytest.mark.slow

SYNTHETIC = ["--device", "cpu", "--batch-size", "2", "--threads", "2", "--keep-checkpoints", "1",
             "--set", "model.num_classes=4"]
# checkpoints of 25 MB, not 455, where two are on disk at once (the suite's temp folder stays
# under 1 GB); the divergence tests keep the full width, whose blow-up steps they name
NARROW = ["--set", "model.fc_width=64"]


def train(*args: str) -> object:
    return CliRunner().invoke(main, ["train", "synthetic", *SYNTHETIC, *args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_diverging_run_stops_with_exit_3_and_saves_nothing_non_finite(tmp_path):
    """lr 100 (fc_width 64): the loss turns nan at step 4 (measured): the run stops at step 4's
    sync point, names it and the last good checkpoint (step 3), and writes no more."""
    run_dir = tmp_path / "run"
    result = train("--run-dir", str(run_dir), "--epochs", "2", "--max-steps-per-epoch", "4",
                   "--log-every", "1", "--checkpoint-every", "1", "--lr", "100", *NARROW)
    assert result.exit_code == 3, result.output
    kept = list_checkpoints(run_dir)
    assert [p.name for p in kept] == ["ckpt-0000-0000003.pt"]
    assert error_lines(result) == [
        "error: training diverged at epoch 1, step 4 of 4 (global step 4): the train loss is nan "
        "(mean since the previous sync point) and 16 of 16 parameters hold NaN or infinity "
        "(first: conv1.weight). Nothing non-finite was saved. Lower the learning rate (--lr, 100 "
        f"now; e.g. 10x lower) and continue from the last good checkpoint with --resume "
        f"{kept[0]} (exit status 3)"]
    assert "Traceback" not in result.output
    state = torch.load(kept[0], weights_only=True)
    assert first_nonfinite(state["model"]) is None
    # the last good checkpoint stays usable
    scored = CliRunner().invoke(main, ["eval", "synthetic", "--checkpoint", str(kept[0]),
                                       "--device", "cpu", "--batch-size", "2"])
    assert scored.exit_code == 0, scored.output


def test_without_a_checkpoint_yet_the_message_says_to_run_again(tmp_path):
    result = train("--run-dir", str(tmp_path / "run"), "--epochs", "1",
                   "--max-steps-per-epoch", "3", "--log-every", "3", "--lr", "100")
    assert result.exit_code == 3, result.output
    (line,) = error_lines(result)
    assert line.startswith("error: training diverged at epoch 1, step 3 of 3 (global step 3)")
    assert "no checkpoint was saved before it: run the same command again" in line
    assert list_checkpoints(tmp_path / "run") == []


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory) -> str:
    """A checkpoint file whose conv2.bias holds a NaN, written past save_checkpoint's guard
    (a narrow fc: 10 MB, not 244, kept for the whole module)."""
    cfg = TrainConfig(data="synthetic", model=ModelConfig(num_classes=4, fc_width=64))
    weights = build_model(cfg.model).state_dict()
    weights["conv2.bias"][3] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "checkpoints" / "ckpt-0001-0000004.pt"
    path.parent.mkdir()
    torch.save(new_state(model=weights, config=cfg, epoch=1, global_step=4), path)
    return str(path)


@pytest.mark.parametrize("command", [
    ["eval", "synthetic", "--device", "cpu"],
    ["predict", "no-such-photo.jpg", "--device", "cpu"],
    ["export", "out.pt"],
    ["train", "synthetic", "--device", "cpu", "--resume"],
])
def test_a_non_finite_checkpoint_is_refused_in_one_line(nan_checkpoint, command, tmp_path):
    args = [*command, "--checkpoint", nan_checkpoint] if command[0] != "train" else \
        [*command, nan_checkpoint, "--run-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [
        f"error: {nan_checkpoint}: its weights are not finite (conv2.bias holds NaN or infinity; "
        "the run diverged before this checkpoint was saved), so it can neither score nor "
        "continue anything; use an earlier checkpoint of that run, or train again with a "
        "lower lr"]


def test_save_checkpoint_refuses_non_finite_weights_and_keeps_the_others(tmp_path):
    cfg = TrainConfig(data="synthetic", model=ModelConfig(num_classes=4))
    weights = build_model(cfg.model).state_dict()
    good = save_checkpoint(tmp_path, new_state(model=weights, config=cfg, epoch=0,
                                               global_step=1), keep=1)
    weights["fc8.weight"][0, 0] = float("inf")
    with pytest.raises(CheckpointError, match=r"ckpt-0000-0000002\.pt: not written: .*fc8\.weight"):
        save_checkpoint(tmp_path, new_state(model=weights, config=cfg, epoch=0, global_step=2),
                        keep=1)
    assert list_checkpoints(tmp_path) == [good]
    assert not list(good.parent.glob(".ckpt-*"))


def test_a_resume_may_not_change_the_network_but_says_what_else_changed(tmp_path):
    run_dir = str(tmp_path / "run")
    first = train("--run-dir", run_dir, "--epochs", "1", "--max-steps-per-epoch", "1", *NARROW)
    assert first.exit_code == 0, first.output
    (ckpt,) = list_checkpoints(run_dir)
    for flags, asked, recorded in ((["--arch", "owt"], 'model.arch = "owt"',
                                    'model.arch = "paper"'),
                                   (["--set", "model.lrn=false"], "model.lrn = false",
                                    "model.lrn = true")):
        refused = train("--run-dir", run_dir, "--epochs", "2", "--resume", *NARROW, *flags)
        assert refused.exit_code == 2, refused.output
        assert error_lines(refused) == [
            f"error: {ckpt}: --resume cannot change the network: {asked} asked, the checkpoint "
            f"was trained with {recorded}. Drop the setting to continue that run, or train the "
            "other network from the start in another --run-dir"]
    again = train("--run-dir", run_dir, "--epochs", "2", "--max-steps-per-epoch", "1",
                  "--resume", "--lr", "0.002", "--log-every", "5", *NARROW)
    assert again.exit_code == 0, again.output
    assert ("resuming with changed settings: epochs 1 -> 2; log_every 10 -> 5; optim.lr 0.01 -> "
            "0.002") in again.stdout


def test_eval_and_predict_refuse_shards_smaller_than_the_crop(shard_dataset, raw_dataset,
                                                              tmp_path):
    """Shards made with --size 128 for a checkpoint trained at 256 (224 crops)."""
    from alexnet_dali.loader.data import class_list
    from alexnet_dali.tools.images import ImageSettings
    from alexnet_dali.tools.preprocess import PreprocessConfig, preprocess

    small = tmp_path / "shards128"
    preprocess(raw_dataset, small, PreprocessConfig(image=ImageSettings(size=128), seed=0,
                                                    shard_size=64, workers=1), progress=False)
    cfg = TrainConfig(data=str(shard_dataset), model=ModelConfig(num_classes=4))
    ckpt = save_checkpoint(tmp_path / "run", new_state(
        model=build_model(cfg.model).state_dict(), config=cfg, epoch=1, global_step=3,
        classes=class_list(str(shard_dataset)), image_size=256), keep=1)
    photo = str(next((raw_dataset / "val").glob("*/*")))
    expected = (f"error: {small}/manifest.json: its images are 128x128, smaller than the 224x224 "
                f"view {ckpt} takes (augment.crop = 224, trained on 256x256 shards); use shards "
                "made with `alexnet-dali preprocess --size 256`")
    for args in (["eval", str(small)], ["predict", photo, "--data", str(small)]):
        result = CliRunner().invoke(main, [*args, "--checkpoint", str(ckpt), "--device", "cpu"])
        assert result.exit_code == 2, result.output
        assert error_lines(result) == [expected]


def test_a_run_that_overshoots_says_so_at_the_end_of_its_first_epoch(tmp_path):
    """The paper's init at lr 0.01 on synthetic data: 2.73 after one step (> ln 4)."""
    result = train("--run-dir", str(tmp_path / "run"), "--epochs", "2",
                   "--max-steps-per-epoch", "2", "--log-every", "1", *NARROW)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: the train")]
    assert len(notes) == 1, result.stdout
    assert notes[0].startswith("note: the train loss ")
    loss = float(notes[0].split()[4])
    assert loss >= math.log(4)
    assert notes[0].endswith(
        "after 2 steps is not below ln(4) = 1.386, a uniform guess's: the run is not learning "
        "yet; likely causes: an lr too high (a first loss far above ln C: it overshoots; with "
        "few classes the paper's biases of 1 make its lr 0.01 too high: --config short-run) or "
        "too low, wrong labels or too little data (docs/TRAINING.md, \"A run that does not "
        "learn\")")


@pytest.mark.parametrize("top1_err", [0.75, 0.5])
def test_the_first_plateau_drop_at_chance_gets_a_note_before_it(tmp_path, monkeypatch, top1_err):
    """Validation gives a fixed error: the plateau rule drops the lr after epochs 2 and 3; at
    chance the first drop is announced once, before the epoch line that reports it. A linear
    model stands in for AlexNet: the rule and the note do not depend on it, and its checkpoints
    are kilobytes, not 455 MB each."""
    import alexnet_dali.train.loop as trainer
    import alexnet_dali.train.run as train_run

    monkeypatch.setattr(trainer, "evaluate", lambda *args, **kwargs: {
        "loss": 1.386, "top1_err": top1_err, "top5_err": 0.0, "samples": 1000})
    monkeypatch.setattr(train_run, "build_network", lambda cfg, info: (torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 4)), info.device))
    result = train("--run-dir", str(tmp_path / "run"), "--epochs", "3",
                   "--max-steps-per-epoch", "1", "--lr", "1e-9")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    notes = [i for i, line in enumerate(lines) if line.startswith("note: the val top-1 error")]
    drops = [line for line in lines if "lr -> " in line]
    assert len(drops) == 2
    if top1_err == 0.5:
        assert notes == []
        return
    assert len(notes) == 1
    assert lines[notes[0]].startswith(
        "note: the val top-1 error 0.750 is still at chance (0.750 for 4 classes) where the "
        "plateau rule drops the lr for the first time (1e-09 -> 1e-10): the run has not learned "
        "yet, and a lower lr rarely starts it; likely causes: ")
    assert lines[notes[0] + 1].startswith("epoch 2: ")
    assert "; lr -> 1e-10; saved ckpt-0002-0000002.pt (" in lines[notes[0] + 1]


def test_the_loss_check_fires_once_and_only_for_a_loss_at_or_above_chance():
    net = torch.nn.Linear(3, 4)
    health = Health(net, 4, "/nonexistent", resumed=False)
    assert health.loss_note(1.0, last_of_first_epoch=True, step=8) == ""  # below ln 4: learning
    assert health.loss_note(9.0, last_of_first_epoch=True, step=16) == ""  # checked already
    late = Health(net, 4, "/nonexistent", resumed=False)
    notes = [late.loss_note(1.5, last_of_first_epoch=False, step=s) for s in range(1, 60)]
    assert [i + 1 for i, n in enumerate(notes) if n] == [50]  # LOSS_CHECK_SYNCS
    resumed = Health(net, 4, "/nonexistent", resumed=True)
    assert resumed.loss_note(9.0, last_of_first_epoch=True, step=8) == ""
