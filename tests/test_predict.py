"""`predict` against `eval`: raw val photos give the probabilities eval computes on their shards.

The reference is the eval path itself (the DALI eval loader + `train.validate.probabilities`), read
sample by sample in shard order and matched to the source files through the shard sidecars.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from alexnet_dali.model.checkpoint import colour_stats_record, new_state, save_checkpoint
from alexnet_dali.cli import main
from alexnet_dali.config.schema import AugmentConfig, LoaderConfig, ModelConfig, TrainConfig
from alexnet_dali.train.validate import probabilities
from alexnet_dali.use.inference import Normalization, eval_views, load_for_inference
from alexnet_dali.loader.eval import build_eval_loader
from alexnet_dali.model.alexnet import build_model
from alexnet_dali.tools.pca import load_colour_stats
from alexnet_dali.use.predict import gather_files, load_image, predict_files
from alexnet_dali.tools.manifest import read_manifest
from alexnet_dali.tools.records import read_json, sidecar_path

PROB_TOL = 1e-4  # measured max |Δp|: 4.8e-7 on 100 photos (fp32 rounding, DALI vs torch)
CPU = torch.device("cpu")


def _checkpoint(run_dir: Path, data: Path, augment: AugmentConfig, record_stats: bool) -> Path:
    """A random-weight 4-class paper AlexNet; colour stats recorded, or left to DATA's pca.json."""
    cfg = TrainConfig(data=str(data) if not record_stats else str(run_dir / "gone"),
                      model=ModelConfig(num_classes=4, init="he"), augment=augment)
    torch.manual_seed(0)
    stats = load_colour_stats(data, need_mean_image=augment.mean == "image")
    state = new_state(model=build_model(cfg.model).state_dict(), config=cfg, epoch=1,
                      global_step=1, colour_stats=stats if record_stats else None)
    return save_checkpoint(run_dir, state, keep=1)


def val_sources(shards: Path, raw: Path) -> list[str]:
    """The raw val file of every val sample, in the order the eval reader reads the shards."""
    entries = read_manifest(shards).split("val").shards
    return [str(raw / "val" / rel) for i in range(len(entries))
            for _, rel in read_json(sidecar_path(shards, "val", i))["sources"]]


def eval_probabilities(shards: Path, ckpt: Path, tencrop: bool,
                       batches: int | None = None) -> tuple[torch.Tensor, ...]:
    """Per-sample probabilities and labels exactly as `eval` computes them (one rank), for the
    whole split or its first `batches` batches of 8."""
    inference = load_for_inference(ckpt)
    loader = build_eval_loader(shards, split="val", loader=LoaderConfig(num_threads=1),
                               augment=inference.cfg.augment, batch_size=8, rank=0,
                               world_size=1, device=CPU, tencrop=tencrop)
    probs, labels = [], []
    with torch.no_grad():
        for i, (images, label, valid) in enumerate(loader):
            if i == batches:
                break
            probs.append(probabilities(inference.model, images, tencrop=tencrop)[valid])
            labels.append(label[valid])
    return torch.cat(probs), torch.cat(labels)


@pytest.mark.slow
@pytest.mark.parametrize("augment, record_stats, tencrop", [
    (AugmentConfig(mean="image", std_normalize=True), True, False),
    (AugmentConfig(), False, False),
    (AugmentConfig(mean="image"), True, True),
], ids=["mean-image-std-recorded", "channel-mean-from-pca-json", "tencrop"])
def test_predict_on_raw_photos_agrees_with_eval_on_their_shards(
        raw_dataset, shard_dataset, tmp_path, augment, record_stats, tencrop):
    ckpt = _checkpoint(tmp_path, shard_dataset, augment, record_stats)
    expected, _ = eval_probabilities(shard_dataset, ckpt, tencrop, 1 if tencrop else None)
    files = val_sources(shard_dataset, raw_dataset)[:len(expected)]
    assert len(files) == len(expected) == (8 if tencrop else 32)
    results = predict_files(load_for_inference(ckpt, str(shard_dataset)), files, topk=4,
                            tencrop=tencrop, batch_size=5, progress=False)
    assert [r.file for r in results] == files and not any(r.error for r in results)
    got = torch.zeros_like(expected)
    for row, result in enumerate(results):
        for top in result.top:
            got[row, top.class_id] = top.prob
    assert [r.top[0].class_id for r in results] == expected.argmax(dim=1).tolist()  # top-1
    assert (got - expected).abs().max().item() < PROB_TOL


def test_eval_views_match_the_center_and_ten_crop_definitions():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    mean_image = rng.normal(0, 20, size=(8, 8, 3)).astype(np.float32)
    norm = Normalization((10.0, 20.0, 30.0), (2.0, 4.0, 5.0), mean_image)
    views = eval_views(torch.from_numpy(images), norm, crop=6, tencrop=True).numpy()
    x = images.astype(np.float64) - mean_image  # NHWC
    ref = []
    for mirrored in (False, True):  # TL, TR, BL, BR, center; then the same crops mirrored
        for ax, ay in ((0, 0), (2, 0), (0, 2), (2, 2), (1, 1)):
            crop = x[:, ay:ay + 6, ax:ax + 6]
            ref.append(crop[:, :, ::-1] if mirrored else crop)
    ref = (np.stack(ref, 1) - [10.0, 20.0, 30.0]) / [2.0, 4.0, 5.0]
    np.testing.assert_allclose(views, ref.transpose(0, 1, 4, 2, 3), rtol=1e-5, atol=1e-4)
    center = eval_views(torch.from_numpy(images), norm, crop=6).numpy()
    np.testing.assert_allclose(center[:, 0], views[:, 4], rtol=0, atol=0)


@pytest.fixture(scope="module")
def recorded_checkpoint(shard_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("predict-run")
    yield _checkpoint(run, shard_dataset, AugmentConfig(std_normalize=True), True).parent.parent
    shutil.rmtree(run)  # 0.23 GB: not kept for the rest of the session


def test_predict_cli_json_errors_and_exit_status(recorded_checkpoint, raw_dataset, shard_dataset,
                                                 tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = sorted((raw_dataset / "val").glob("*/*"))[:3]
    for i, src in enumerate(good):
        (photos / f"{2 - i}.jpg").write_bytes(src.read_bytes())  # walk order is by name
    (photos / "broken.jpg").write_bytes(b"not an image")
    (photos / ".hidden.jpg").write_bytes(b"skipped")
    single = tmp_path / "single.JPEG"
    single.write_bytes(good[0].read_bytes())
    out = tmp_path / "preds.json"
    result = CliRunner().invoke(main, ["predict", str(single), str(photos), str(tmp_path / "no"),
                                       "--checkpoint", str(recorded_checkpoint), "--topk", "2",
                                       "--json", str(out), "--device", "cpu", "--quiet",
                                       "--data", str(shard_dataset)])
    assert result.exit_code == 1, result.output
    entries = json.loads(out.read_text())
    names = [str(single)] + [str(photos / n) for n in ("0.jpg", "1.jpg", "2.jpg", "broken.jpg")]
    assert [e["file"] for e in entries] == names + [str(tmp_path / "no")]
    for entry in entries[:4]:
        assert set(entry) == {"file", "top"} and len(entry["top"]) == 2
        assert [set(t) for t in entry["top"]] == [{"class_id", "class", "wnid", "prob"}] * 2
        assert entry["top"][0]["prob"] >= entry["top"][1]["prob"]
        for top in entry["top"]:  # --data's names: the words, and the WNID beside them
            assert top["wnid"] == f"n{top['class_id']:08d}"
            assert top["class"] == ("disc", "square", "triangle", "cross")[top["class_id"]]
    assert entries[0]["top"] == entries[3]["top"]  # the same photo under two names
    assert set(entries[4]) == {"file", "error"} and "not-an-image" in entries[4]["error"]
    assert "unreadable" in entries[5]["error"]
    # each bad file is said once, in its table row; then the count (stderr)
    rows = [line for line in result.stdout.splitlines() if "ERROR" in line]
    assert len(rows) == 2 and "not-an-image" in rows[0] and "unreadable" in rows[1]
    assert result.stderr == "2 of 6 files could not be read (the ERROR rows)\n"
    assert "predict" not in result.stderr  # --quiet: no progress bar


@pytest.mark.parametrize("command", ["predict", "export"])
def test_an_unwritable_output_is_one_error_line(command, recorded_checkpoint, raw_dataset,
                                                shard_dataset, tmp_path):
    """--json / OUT under a path whose parent is a file: one `error:` line naming it, exit 2."""
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    target = blocker / "out.json"
    photo = str(sorted((raw_dataset / "val").glob("*/*"))[0])
    args = (["predict", photo, "--json", str(target)] if command == "predict"
            else ["export", str(target)])
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(recorded_checkpoint),
                                       "--data", str(shard_dataset)])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and str(blocker) in error[0] and "choose another path" in error[0]
    assert f"run {command} again" in error[0] and "Traceback" not in result.output


def test_predict_converts_odd_files_like_preprocess(tmp_path):
    from alexnet_dali.tools.images import ImageSettings
    from alexnet_dali.tools.sample_data import SampleDataConfig, write_sample_data

    write_sample_data(tmp_path, SampleDataConfig(classes=1, train_per_class=1, val_per_class=1,
                                                 odd_files=True, min_side=64, max_side=96))
    odd = {Path(f).name: f for f in gather_files([str(tmp_path / "train")])}
    for name in ("odd_cmyk.JPEG", "odd_gray.JPEG", "odd_rgba.JPEG", "odd_i16.JPEG"):
        pixels = load_image(odd[name], ImageSettings())
        assert pixels.shape == (256, 256, 3) and pixels.dtype == np.uint8, name


def test_normalisation_sources_in_order(shard_dataset, tmp_path):
    from alexnet_dali.errors import CheckpointError
    from alexnet_dali.use.inference import normalization_of

    stats = load_colour_stats(shard_dataset)
    gone = TrainConfig(data=str(tmp_path / "gone"), augment=AugmentConfig(std_normalize=True))
    recorded = {"colour_stats": colour_stats_record(stats)}
    assert normalization_of(recorded, gone).std == stats.std  # 2. recorded in the checkpoint
    assert normalization_of({}, gone, data=str(shard_dataset)).mean == stats.mean  # 3. --data
    with pytest.raises(CheckpointError, match="pass --data SHARDS"):
        normalization_of({"path": "old.pt"}, gone)
    explicit = TrainConfig(data=str(tmp_path / "gone"), augment=AugmentConfig(
        std_normalize=True, mean_rgb=(1.0, 2.0, 3.0), std_rgb=(4.0, 5.0, 6.0)))
    assert normalization_of(recorded, explicit) == Normalization((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
