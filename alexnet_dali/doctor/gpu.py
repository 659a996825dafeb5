"""The doctor's GPU checks. Each is a function of devices, so that the tests run the same code
on the CPU (CPU vs CPU graphs, a bf16 step on the CPU, the split net on two CPU "devices",
gloo instead of NCCL); the `GPU_CHECKS` wrappers give them CUDA devices.

Decoder tolerance. nvJPEG / the hardware decoder and libjpeg-turbo produce different pixels from
the same JPEG: the IDCTs round differently (a level or two), and by default DALI's `mixed`
decoder upsamples the 4:2:0 chroma without libjpeg's "fancy" (triangle) filter
(`jpeg_fancy_upsampling=False`). On the doctor's images the two upsamplings alone, both in
libjpeg-turbo, differ by 0.5 levels on average per image (at most 0.94), but by up to 73 levels
at saturated colour edges. So the decoded images must agree to a mean |diff| of
`DECODE_MEAN_DIFF` levels per image and a median of at most 1 level; no bound on the maximum.
The augmentation is checked exactly on each side instead: the GPU output against the NumPy
reference replaying the GPU's own draws on the GPU's own decoded image.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from alexnet_dali.config.schema import AugmentConfig, ModelConfig, TrainConfig
from alexnet_dali.doctor.runner import CLASSES, Check, Context
from alexnet_dali.doctor.cpu import (CPU, SHORT_RUN, STEP_LR, batch_loss, count_ops, eval_draws,
                                     loader_config, max_error, quiet, replay, train_draws)
from alexnet_dali.pipelines import reference
from alexnet_dali.pipelines.spec import Draws

DECODE_MEAN_DIFF = 2.0  # levels (0-255), per image: IDCT rounding + chroma upsampling
BF16_LOGIT_TOL = 0.05  # bf16 keeps 8 bits: ~0.4 % per operand, relative to the logits' scale


def decode_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(worst per-image mean, worst per-image median) of |a - b| over a batch of HWC uint8."""
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64)).reshape(len(a), -1)
    return float(diff.mean(axis=1).max()), float(np.median(diff, axis=1).max())


def check_decoded(a: np.ndarray, b: np.ndarray) -> str:
    """Raise unless two decoders' batches agree within the stated tolerance; the figures."""
    mean, median = decode_difference(a, b)
    if mean > DECODE_MEAN_DIFF or median > 1:
        raise AssertionError(f"decoded images differ: mean |diff| {mean:.2f} levels (limit "
                             f"{DECODE_MEAN_DIFF}), median {median:.0f} (limit 1)")
    return f"decoded mean |diff| <= {mean:.2f}, median <= {median:.0f} levels"


def compare_train_graphs(data: Path, ctx: Context, device: torch.device) -> str:
    """The train graph on `device` vs the CPU graph, same seed: same draws and labels, decoded
    pixels within tolerance, and the device's output exact against the NumPy replay."""
    aug = AugmentConfig()
    where = "gpu" if device.type == "cuda" else "cpu"
    out, labels, draws = train_draws(data, aug, loader_config(ctx, device=where), device)
    _, cpu_labels, cpu = train_draws(data, aug, loader_config(ctx, device="cpu"), CPU)
    same = {"labels": bool(np.array_equal(labels, cpu_labels))}
    same.update({f.name: bool(np.allclose(getattr(draws, f.name), getattr(cpu, f.name)))
                 for f in dataclasses.fields(Draws) if f.name != "decoded"})
    if not all(same.values()):
        raise AssertionError(f"same seed, other draws or labels than the CPU graph ({same})")
    stats = reference.read_stats(data)
    worst = max(max_error(out[i], replay(draws, i, aug, stats)) for i in range(len(out)))
    if worst > reference.FLOAT32_ATOL:
        raise AssertionError(f"{where} output vs NumPy replay: max |diff| {worst:.2g}")
    return (f"draws equal; replay max |diff| {worst:.1e}; "
            + check_decoded(draws.decoded, cpu.decoded))


def compare_eval_graphs(data: Path, ctx: Context, device: torch.device) -> str:
    """Centre and ten-crop graphs on `device` vs the CPU: labels equal, pixels within tolerance,
    the device's ten views exact against the NumPy views of its own decoded image."""
    aug = AugmentConfig()
    where = "gpu" if device.type == "cuda" else "cpu"
    details = []
    for tencrop in (False, True):
        out, labels, decoded = eval_draws(data, aug, loader_config(ctx, device=where), device,
                                          tencrop)
        _, cpu_labels, cpu_decoded = eval_draws(data, aug, loader_config(ctx, device="cpu"),
                                                CPU, tencrop)
        if not np.array_equal(labels, cpu_labels):
            raise AssertionError(f"labels differ from the CPU graph: {labels} vs {cpu_labels}")
        stats = reference.read_stats(data)
        views = [reference.tencrop_views(d, aug, stats) for d in decoded]
        expected = np.stack([v if tencrop else v[4] for v in views])  # view 4: the centre
        worst = max_error(out, expected)
        if worst > reference.FLOAT32_ATOL:
            raise AssertionError(f"{where} {'ten-crop' if tencrop else 'centre'} output vs "
                                 f"NumPy: max |diff| {worst:.2g}")
        details.append(check_decoded(decoded, cpu_decoded))
    return f"centre + ten-crop exact vs NumPy; {details[-1]}"


def bf16_channels_last_step(data: Path, ctx: Context, device: torch.device) -> str:
    """bf16 autocast + channels_last on `device`: logits near fp32's, one step lowers the loss."""
    from alexnet_dali.model.alexnet import build_model
    from alexnet_dali.train.optim import build_optimizer
    from alexnet_dali.train.steps import TrainStep

    images, labels, *_ = train_draws(data, SHORT_RUN, loader_config(ctx, device="cpu"), CPU, 8)
    x = torch.from_numpy(images).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels).to(device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=CLASSES, dropout=0.0, init="he")).to(device)
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        full = model.eval()(x)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            half = model(x)
    if half.dtype != torch.bfloat16:
        raise AssertionError(f"autocast logits are {half.dtype}, not bfloat16")
    error = ((half.float() - full).abs().max() / full.abs().max().clamp_min(1e-6)).item()
    if error > BF16_LOGIT_TOL:
        raise AssertionError(f"bf16 logits differ from fp32 by {error:.3f} of their scale")
    optim = dataclasses.replace(TrainConfig().optim, lr=STEP_LR)
    step = TrainStep(model, build_optimizer(model.parameters(), optim), device, "bf16")
    before = batch_loss(model, x, y)
    loss = step(x, y).loss
    after = batch_loss(model, x, y)
    if not (torch.isfinite(loss).item() and after < before):
        raise AssertionError(f"bf16 step: loss {before:.4f} -> {after:.4f}")
    if not model.conv2.weight.is_contiguous(memory_format=torch.channels_last):
        raise AssertionError("the step lost the channels_last weight layout")
    ops = count_ops(lambda: step(x, y))
    ctx.numbers[f"aten ops per training step ({device.type}, bf16)"] = ops
    return (f"logits within {error:.3f} of fp32's scale; loss {before:.4f} -> {after:.4f}; "
            f"{ops} ops per step")


def model_parallel_equals_grouped(devices: tuple[str, str]) -> str:
    """The split net on `devices` equals the grouped net on devices[0]: logits and gradients."""
    from alexnet_dali.model.alexnet import build_model
    from alexnet_dali.model.parallel import ModelParallelAlexNet, merge_state_dict

    cfg = ModelConfig(num_classes=11, dropout=0.0)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 both
    try:
        torch.manual_seed(0)
        grouped = build_model(cfg).to(devices[0])
        split = ModelParallelAlexNet(cfg, devices=devices)
        split.load_state_dict(grouped.state_dict())
        x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        y = torch.tensor([0, 3, 5, 10])
        out_g, out_s = grouped(x.to(devices[0])), split(x)
        logit_err = (out_s - out_g).abs().max().item() / out_g.abs().max().item()
        torch.nn.functional.cross_entropy(out_g, y.to(devices[0])).backward()
        torch.nn.functional.cross_entropy(out_s, y.to(out_s.device)).backward()
        grads = merge_state_dict({n: p.grad for n, p in split.named_parameters()})
        grad_err = max(((grads[n] - p.grad.cpu()).abs().max() / p.grad.abs().max()).item()
                       for n, p in grouped.named_parameters())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    if logit_err > 1e-4 or grad_err > 1e-4:
        raise AssertionError(f"split vs grouped: logits {logit_err:.1e}, gradients "
                             f"{grad_err:.1e} of their scale (limit 1e-4)")
    return f"{devices}: logits within {logit_err:.1e}, gradients within {grad_err:.1e}"


def two_process_all_reduce(backend: str, megabytes: int = 64, timeout: float = 300) -> dict:
    """torchrun 2 processes that all-reduce `megabytes` (`doctor/allreduce.py`); rank 0's JSON."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "alexnet_dali.doctor.allreduce", "--backend", backend, "--megabytes",
           str(megabytes)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " ".join((done.stderr or done.stdout).split())[-400:]
        raise RuntimeError(f"torchrun exited {done.returncode}: {tail}")
    result = json.loads(lines[-1])
    if not result["correct"]:
        raise AssertionError(f"all-reduce gave wrong sums: {result}")
    return result


def throughput(data: Path, ctx: Context, device: str, batch: int, steps: int) -> str:
    """Pipeline, synthetic-train and DALI-fed-train img/s on `device`, and the starve ratio."""
    import statistics

    from alexnet_dali.bench.timing import cycle, measure
    from alexnet_dali.bench.train import run_bench
    from alexnet_dali.loader.train import build_train_loader

    torch_device = torch.device("cuda", 0) if device == "cuda" else CPU
    loader = loader_config(ctx, device="gpu" if device == "cuda" else "cpu")
    tl = build_train_loader(data, loader=loader, augment=AugmentConfig(), batch_size=batch,
                            rank=0, world_size=1, device=torch_device, seed=0)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rates = measure({"dali": (cycle(tl), loader.prefetch)}, batch, 2, steps, 3, sync)["dali"]
    pipeline = statistics.median(rates)
    with quiet():
        train = run_bench(str(data), batch_size=batch, steps=steps, warmup=2, device=device,
                          precision="auto", workers=ctx.threads, threads=0, compile=False)
    synthetic, fed = train["synthetic_images_per_s"], train["dali_images_per_s"]
    numbers = {"pipeline": pipeline, "synthetic-train": synthetic, "DALI-fed-train": fed}
    for name, value in numbers.items():
        ctx.numbers[f"{name} img/s ({device}, batch {batch})"] = value
    ctx.numbers[f"starve ratio DALI-fed / synthetic ({device})"] = fed / synthetic
    ctx.numbers[f"pipeline / synthetic-train ({device})"] = pipeline / synthetic
    return (f"pipeline {pipeline:,.0f}, synthetic {synthetic:,.0f}, DALI-fed {fed:,.0f} img/s; "
            f"DALI-fed / synthetic {fed / synthetic:.2f}, pipeline / synthetic "
            f"{pipeline / synthetic:.2f}")


CUDA0 = torch.device("cuda", 0)
GPU_CHECKS = [
    Check("gpu-train-graph", lambda ctx: compare_train_graphs(ctx.data(), ctx, CUDA0), gpus=1),
    Check("gpu-eval-graphs", lambda ctx: compare_eval_graphs(ctx.data(), ctx, CUDA0), gpus=1),
    Check("bf16-channels-last-step",
          lambda ctx: bf16_channels_last_step(ctx.data(), ctx, CUDA0), gpus=1),
    Check("model-parallel", lambda ctx: model_parallel_equals_grouped(("cuda:0", "cuda:1")),
          gpus=2),
    Check("nccl-all-reduce", lambda ctx: nccl_detail(ctx, two_process_all_reduce("nccl")),
          gpus=2),
    Check("gpu-throughput", lambda ctx: throughput(ctx.data(), ctx, "cuda", 128, 20), gpus=1,
          slow=True),
]


def nccl_detail(ctx: Context, result: dict) -> str:
    """One line from the all-reduce worker's result (its bandwidth goes to the numbers)."""
    ctx.numbers[f"{result['backend']} all-reduce bus GB/s (2 ranks)"] = result["bus_gb_s"]
    return (f"2 ranks, sums correct; {result['megabytes']} MB in {result['seconds'] * 1e3:.1f} "
            f"ms: {result['bus_gb_s']:.1f} GB/s bus bandwidth")
