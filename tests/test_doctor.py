"""`alexnet-dali doctor`: the CPU checks pass here, the GPU checks are SKIPs by name, a FAIL makes
exit status 1, and the GPU checks' code runs on the CPU (CPU "devices", gloo for NCCL)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from alexnet_dali.doctor import env as doctor_env, gpu as doctor_gpu
from alexnet_dali.cli import main
from alexnet_dali.doctor.runner import Check, Context, Skip, render_report, run_check, run_doctor

CPU = torch.device("cpu")
CPU_CHECK_NAMES = ["cpu-train-graph", "cpu-tencrop-graph", "cpu-decoder-vs-pillow",
                   "gpu-graphs-trace", "model", "train-step", "checkpoint-round-trip",
                   "bench-pipeline"]


@pytest.fixture
def ctx(shard_dataset: Path, tmp_path: Path) -> Context:
    return Context(workdir=tmp_path, quick=True, threads=1, data_dir=shard_dataset)


@pytest.mark.slow
def test_doctor_quick_passes_on_cpu_and_skips_gpu_checks_by_name(tmp_path: Path) -> None:
    report = tmp_path / "doctor.md"
    result = CliRunner().invoke(main, ["doctor", "--quick", "--threads", "1", "--out",
                                       str(report)])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    for name in CPU_CHECK_NAMES:
        assert f"PASS {name}: " in text, name
    if not torch.cuda.is_available():
        for name in ("gpu-train-graph", "gpu-eval-graphs", "bf16-channels-last-step",
                     "gpu-throughput"):
            assert f"SKIP {name}: no CUDA device" in text
        assert "SKIP model-parallel: no CUDA device; needs 2" in text
        assert "SKIP nccl-all-reduce: no CUDA device; needs 2" in text
    assert text.startswith("# alexnet-dali doctor") and "| DALI |" in text
    assert "| DALI CPU pipeline img/s (1 threads) |" in text


def test_a_failing_check_is_a_fail_line_and_exit_1(tmp_path: Path) -> None:
    def boom(ctx: Context) -> str:
        raise ValueError("the reason")

    def skipped(ctx: Context) -> str:
        raise Skip("not here")

    ran = []
    checks = [Check("boom", boom), Check("skipped", skipped),
              Check("after", lambda ctx: ran.append(1) or "fine"),
              Check("slow", lambda ctx: "never", slow=True),
              Check("two-gpus", lambda ctx: "never", gpus=99)]
    lines: list[str] = []
    status = run_doctor(checks, out=tmp_path / "r.md", quick=True, echo=lines.append)
    assert status == 1 and ran == [1]
    assert any(line.startswith("FAIL boom: ValueError: the reason [test_doctor.py:")
               for line in lines)
    assert "SKIP skipped: not here" in lines and "SKIP slow: --quick" in lines
    assert any(line.startswith("SKIP two-gpus: ") and "needs 99" in line for line in lines)
    assert "**failed**" in (tmp_path / "r.md").read_text()
    assert lines[-1] == (f"report written to {tmp_path / 'r.md'}: to report a problem, open an "
                         "issue on the project's issue tracker (the repository you installed it "
                         "from) and paste the report there, with the command that failed and its "
                         "output (README: Reporting a problem)")
    assert run_doctor(checks[1:], quick=True, echo=lines.append) == 0


def test_report_is_markdown_with_environment_checks_and_numbers() -> None:
    from alexnet_dali.doctor.runner import Result

    results = [Result("a", "PASS", "ok\nacross lines", 1.25), Result("b", "SKIP", "no CUDA")]
    text = render_report([("torch", "2.x")], results, {"img/s": 1234.5}, "alexnet-dali doctor")
    assert "| torch | 2.x |" in text and "PASS a: ok across lines (1.2 s)" in text
    assert "SKIP b: no CUDA\n" in text and "| img/s | 1,234.50 |" in text
    assert "1 PASS, 0 FAIL, 1 SKIP — nothing failed" in text


def test_gpu_checks_need_cuda_else_skip(ctx: Context) -> None:
    gpus = doctor_gpu.GPU_CHECKS
    results = [run_check(check, ctx, gpus=0) for check in gpus]
    assert [r.status for r in results] == ["SKIP"] * len(gpus)
    assert all(r.detail.startswith("no CUDA device") for r in results)
    assert run_check(gpus[-1], Context(ctx.workdir, quick=True), gpus=1).detail == "--quick"


def test_graph_comparisons_run_on_the_cpu(ctx: Context) -> None:
    """The GPU-vs-CPU comparisons with the CPU on both sides: same draws, exact replays."""
    assert "draws equal" in doctor_gpu.compare_train_graphs(ctx.data(), ctx, CPU)
    assert "decoded mean |diff| <= 0.00" in doctor_gpu.compare_eval_graphs(ctx.data(), ctx, CPU)


def test_decoder_tolerance_allows_edges_not_shifts() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 190, (2, 64, 64, 3), dtype=np.uint8)
    edges = a.copy()
    edges[:, ::32, ::2] += 64  # 1/64 of the pixels 64 levels off, as at sharp colour edges
    assert "mean |diff| <= 1.00" in doctor_gpu.check_decoded(a, edges)
    shifted = np.clip(a.astype(np.int64) + 3, 0, 255).astype(np.uint8)
    with pytest.raises(AssertionError, match="decoded images differ"):
        doctor_gpu.check_decoded(a, shifted)


@pytest.mark.slow
def test_bf16_channels_last_step_and_model_parallel_on_the_cpu(ctx: Context) -> None:
    assert "loss" in doctor_gpu.bf16_channels_last_step(ctx.data(), ctx, CPU)
    assert "gradients within" in doctor_gpu.model_parallel_equals_grouped(("cpu", "cpu"))


@pytest.mark.slow
def test_two_process_all_reduce_with_gloo(ctx: Context) -> None:
    result = doctor_gpu.two_process_all_reduce("gloo", megabytes=1)
    assert result["correct"] and result["world_size"] == 2 and result["bus_gb_s"] > 0
    assert "sums correct" in doctor_gpu.nccl_detail(ctx, result)
    assert ctx.numbers["gloo all-reduce bus GB/s (2 ranks)"] == result["bus_gb_s"]


@pytest.mark.slow
def test_throughput_and_starve_ratio_on_the_cpu(ctx: Context) -> None:
    detail = doctor_gpu.throughput(ctx.data(), ctx, "cpu", batch=2, steps=1)
    assert "DALI-fed / synthetic" in detail
    ratio = ctx.numbers["starve ratio DALI-fed / synthetic (cpu)"]
    fed = ctx.numbers["DALI-fed-train img/s (cpu, batch 2)"]
    assert ratio == pytest.approx(fed / ctx.numbers["synthetic-train img/s (cpu, batch 2)"])


def test_reference_replays_a_constant_image_by_hand() -> None:
    """The shared NumPy reference on a flat image: (value - mean + shift) / std, every view."""
    from alexnet_dali.config.schema import AugmentConfig
    from alexnet_dali.pipelines import reference

    stats = {"mean": [100.0, 110.0, 120.0], "std": [50.0, 60.0, 70.0],
             "eigenvalues": [4.0, 1.0, 0.25], "eigenvectors": np.eye(3).tolist()}
    image = np.full((256, 256, 3), 130, dtype=np.uint8)
    aug = AugmentConfig(std_normalize=True, pca_scale="sqrt")
    alpha = np.array([0.5, -1.0, 2.0])
    view = reference.train_view(image, 3, 7, 1, alpha, aug, stats)
    shift = alpha * np.sqrt([4.0, 1.0, 0.25])  # P = I: shift_c = alpha_c * sqrt(lambda_c)
    expected = (130 - np.array(stats["mean"]) + shift) / np.array(stats["std"])
    assert view.shape == (3, 224, 224)
    np.testing.assert_allclose(view[:, 0, 0], expected)
    assert np.ptp(view, axis=(1, 2)).max() == 0
    views = reference.tencrop_views(image, aug, stats)
    assert views.shape == (10, 3, 224, 224)
    np.testing.assert_allclose(views[:, :, 5, 5], np.tile((130 - np.array(stats["mean"]))
                                                          / np.array(stats["std"]), (10, 1)))
    assert reference.anchor(np.float32(5 / 32)) == 5
    with pytest.raises(ValueError, match="not k/32"):
        reference.anchor(0.1)


def smi_says(monkeypatch: pytest.MonkeyPatch, *, raises: Exception | None = None,
             returncode: int = 0, stdout: str = "", stderr: str = "", cuda: int = 0) -> str:
    """doctor_env.driver_version() with nvidia-smi present and subprocess.run patched."""
    def run(args, **kwargs):
        assert kwargs["timeout"] == doctor_env.SMI_TIMEOUT_S
        if raises:
            raise raises
        return subprocess.CompletedProcess(args, returncode, stdout, stderr)

    monkeypatch.setattr(doctor_env.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(doctor_env.subprocess, "run", run)
    monkeypatch.setattr(doctor_env, "driver_cuda_version", lambda: cuda)
    return doctor_env.driver_version()


def test_nvidia_smi_failures_are_report_lines_not_crashes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert smi_says(monkeypatch, stdout="550.54.15\n", cuda=12040) == \
        "driver 550.54.15, supports CUDA 12.4"
    hang = subprocess.TimeoutExpired(["nvidia-smi"], 30)
    assert smi_says(monkeypatch, raises=hang) == "nvidia-smi did not answer within 30 s"
    assert smi_says(monkeypatch, raises=FileNotFoundError(2, "No such file"), cuda=12040) == \
        "supports CUDA 12.4, nvidia-smi could not run ([Errno 2] No such file)"
    assert smi_says(monkeypatch, returncode=9, stdout="NVIDIA-SMI has failed because it "
                    "couldn't communicate with the NVIDIA driver.\n") == (
        "nvidia-smi exited with status 9: NVIDIA-SMI has failed because it couldn't "
        "communicate with the NVIDIA driver.")
    monkeypatch.setattr(doctor_env.shutil, "which", lambda name: None)
    assert doctor_env.driver_version() == "none (no NVIDIA driver found)"
