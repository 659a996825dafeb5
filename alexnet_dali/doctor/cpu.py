"""The doctor's CPU checks: each takes the shared `Context`, returns its PASS detail or raises.

They run on a machine without a GPU too, on data the doctor generates (`doctor.make_data`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import statistics
from pathlib import Path

import numpy as np
import torch

from alexnet_dali.config.schema import AugmentConfig, LoaderConfig, ModelConfig, TrainConfig
from alexnet_dali.doctor.runner import CLASSES, Check, Context, Skip
from alexnet_dali.pipelines import reference
from alexnet_dali.pipelines.spec import Draws

CPU = torch.device("cpu")
PAPER_PARAMETERS = 60_965_224  # the paper net with 1000 classes (docs/MODEL.md)
# DALI's libjpeg-turbo vs Pillow's libjpeg on the same bytes: the same fancy upsampling, IDCTs
# that differ in rounding only (mean |diff| below 1 level, a few levels at most).
PILLOW_MEAN_DIFF, PILLOW_MAX_DIFF = 1.0, 8
SHORT_RUN = AugmentConfig(std_normalize=True)  # with init "he" (docs/TRAINING.md)
STEP_LR = 1e-4  # one plain SGD step this small must go downhill on an 8-image batch


def loader_config(ctx: Context, **changes) -> LoaderConfig:
    """The loader settings the checks use: the doctor's threads, a small shuffle buffer."""
    return dataclasses.replace(LoaderConfig(num_threads=ctx.threads, shuffle_buffer=16), **changes)


def train_draws(data: Path, aug: AugmentConfig, loader: LoaderConfig, device: torch.device,
                batch: int = 4, seed: int = 3) -> tuple[np.ndarray, np.ndarray, Draws]:
    """One train batch (images, labels) and its `Draws`, NumPy."""
    from alexnet_dali.loader.train import build_train_loader

    tl = build_train_loader(data, loader=loader, augment=aug, batch_size=batch, rank=0,
                            world_size=1, device=device, seed=seed, return_draws=True)
    images, labels, *draws = (t.cpu().numpy() for t in tl.run_with_draws())
    return images, labels, Draws.of(draws)


def eval_draws(data: Path, aug: AugmentConfig, loader: LoaderConfig, device: torch.device,
               tencrop: bool, batch: int = 4) -> list[np.ndarray]:
    """The first val batch (images, labels, decoded), NumPy."""
    from alexnet_dali.loader.eval import build_eval_loader

    el = build_eval_loader(data, loader=loader, augment=aug, batch_size=batch, rank=0,
                           world_size=1, device=device, tencrop=tencrop, return_draws=True)
    return [t.cpu().numpy() for t in el.run_with_draws()]


def replay(draws: Draws, i: int, aug: AugmentConfig, stats: dict) -> np.ndarray:
    """The NumPy reference's train view of sample `i`, from its draws (CHW float64)."""
    x, y = reference.anchor(draws.crop_x[i]), reference.anchor(draws.crop_y[i])
    return reference.train_view(draws.decoded[i], x, y, draws.mirror[i], draws.alpha[i], aug,
                                stats)


def max_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float64."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def check_train_graph(ctx: Context) -> str:
    """The CPU train graph replays against the NumPy reference (paper recipe, mean image)."""
    worst = 0.0
    for aug in (AugmentConfig(), AugmentConfig(mean="image", std_normalize=True, pca_rescale=True)):
        images, _, draws = train_draws(ctx.data(), aug, loader_config(ctx), CPU)
        stats = reference.read_stats(ctx.data())
        for i in range(len(images)):
            expected = replay(draws, i, aug, stats)
            worst = max(worst, max_error(images[i], expected))
    if worst > reference.FLOAT32_ATOL:
        raise AssertionError(f"max |DALI - NumPy| = {worst:.2g} > {reference.FLOAT32_ATOL}")
    return f"2 recipes x {len(images)} images, max |DALI - NumPy| = {worst:.1e}"


def check_tencrop_graph(ctx: Context) -> str:
    """The CPU ten-crop graph equals the NumPy views (corners, centre, mirrored) in order."""
    aug = AugmentConfig()
    images, _, decoded = eval_draws(ctx.data(), aug, loader_config(ctx), CPU, tencrop=True)
    stats = reference.read_stats(ctx.data())
    worst = max(max_error(images[i], reference.tencrop_views(decoded[i], aug, stats))
                for i in range(len(images)))
    if worst > reference.FLOAT32_ATOL:
        raise AssertionError(f"max |DALI - NumPy| = {worst:.2g} > {reference.FLOAT32_ATOL}")
    return f"{len(images)} images x 10 views, max |DALI - NumPy| = {worst:.1e}"


def check_decoder_vs_pillow(ctx: Context) -> str:
    """DALI's CPU decoder against Pillow on the first val shard's JPEGs."""
    from PIL import Image

    from alexnet_dali.pipelines.spec import load_shard_set
    from alexnet_dali.tools.shards import iter_shard

    _, _, decoded = eval_draws(ctx.data(), AugmentConfig(), loader_config(ctx), CPU, False)
    first_tar = load_shard_set(ctx.data(), "val").tars[0]
    jpegs = [members["jpg"] for _, members in iter_shard(first_tar)][: len(decoded)]
    diffs = [np.abs(decoded[i].astype(np.int64)
                    - np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int64))
             for i, jpeg in enumerate(jpegs)]
    mean, worst = max(float(d.mean()) for d in diffs), max(int(d.max()) for d in diffs)
    if mean > PILLOW_MEAN_DIFF or worst > PILLOW_MAX_DIFF:
        raise AssertionError(f"DALI vs Pillow: mean |diff| {mean:.2f} (limit "
                             f"{PILLOW_MEAN_DIFF}), max {worst} (limit {PILLOW_MAX_DIFF})")
    return f"{len(diffs)} JPEGs, mean |diff| <= {mean:.2f}, max {worst} levels"


def quiet() -> contextlib.AbstractContextManager:
    """Swallow stdout and stderr (progress bars, status lines) of the code a check runs."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def check_model(ctx: Context) -> str:
    """The paper net: N×1000 logits, 60,965,224 parameters; its forward MACs per image."""
    from alexnet_dali.model.alexnet import build_model, count_parameters, layer_macs

    model = build_model(ModelConfig())
    params = count_parameters(model)["total"]
    if params != PAPER_PARAMETERS:
        raise AssertionError(f"{params:,} parameters, expected {PAPER_PARAMETERS:,}")
    with torch.no_grad():
        shape = tuple(model.eval()(torch.zeros(2, 3, 224, 224)).shape)
    if shape != (2, 1000):
        raise AssertionError(f"output shape {shape}, expected (2, 1000)")
    macs = layer_macs(model)
    ctx.numbers["forward GMAC per image (paper net)"] = macs["total"] / 1e9
    return f"output {shape}, {params:,} parameters, {macs['total'] / 1e9:.3f} GMAC forward/image"


def check_train_step(ctx: Context) -> str:
    """One SGD step on a DALI-fed batch lowers that batch's loss (dropout off, eval-mode loss).

    The short-run recipe (unit-std inputs, He init; docs/TRAINING.md) and a small first step
    (`STEP_LR`): the paper's N(0, 0.01) init on 0-255 inputs and lr 0.01 need its large batches.
    """
    from alexnet_dali.model.alexnet import build_model
    from alexnet_dali.train.optim import build_optimizer
    from alexnet_dali.train.steps import TrainStep

    images, labels, *_ = train_draws(ctx.data(), SHORT_RUN, loader_config(ctx), CPU,
                                     4 if ctx.quick else 8)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=CLASSES, dropout=0.0, init="he"))
    optim = dataclasses.replace(TrainConfig().optim, lr=STEP_LR)
    step = TrainStep(model, build_optimizer(model.parameters(), optim), CPU, "fp32")
    before = batch_loss(model, x, y)
    step(x, y)
    after = batch_loss(model, x, y)
    if not after < before:
        raise AssertionError(f"loss {before:.4f} -> {after:.4f}: did not go down")
    ops = count_ops(lambda: step(x, y))
    ctx.numbers["aten ops per training step (cpu, fp32)"] = ops
    return f"loss {before:.4f} -> {after:.4f} on a batch of {len(y)}; {ops} ops per step"


VIEW_OPS = {"view", "_unsafe_view", "t", "transpose", "permute", "expand", "reshape", "detach",
            "alias", "as_strided", "squeeze", "unsqueeze", "select", "slice", "flatten",
            "_record_function_enter_new", "_record_function_exit"}


def count_ops(run) -> int:
    """aten operators `run()` dispatches, views and profiler marks left out: on a GPU about one
    kernel launch each, so × a few µs of CPU time is the eager launch overhead of a step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.ops += func.overloadpacket.__name__ not in VIEW_OPS
            return func(*args, **(kwargs or {}))

    with Counter():
        run()
    return Counter.ops


def batch_loss(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy of `model` (eval mode) on one batch."""
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model.eval()(images), labels).item()


def check_checkpoint(ctx: Context) -> str:
    """`train` 2 steps (+ validation) writes a checkpoint; loaded back, it scores the same."""
    from alexnet_dali.model.checkpoint import load_checkpoint, model_from_checkpoint
    from alexnet_dali.train.validate import evaluate
    from alexnet_dali.loader.eval import build_eval_loader
    from alexnet_dali.train.runlog import METRICS_NAME, read_metrics
    from alexnet_dali.train.loop import train

    run_dir = ctx.workdir / "run"
    batch = 4 if ctx.quick else 8
    cfg = TrainConfig(data=str(ctx.data()), run_dir=str(run_dir), epochs=1, batch_size=batch,
                      device="cpu", max_steps_per_epoch=1 if ctx.quick else 2,
                      threads=ctx.threads, log_every=1, tensorboard=False,
                      loader=loader_config(ctx), augment=SHORT_RUN,
                      model=ModelConfig(init="he"), optim=dataclasses.replace(
                          TrainConfig().optim, lr=0.001))
    with quiet():  # the trainer's progress bars and epoch line
        train(cfg)
    logged = read_metrics(run_dir / METRICS_NAME)
    val_loss = [r["loss"] for r in logged if r["kind"] == "val"][-1]
    state = load_checkpoint(run_dir)
    model, saved = model_from_checkpoint(state)
    loader = build_eval_loader(ctx.data(), loader=saved.loader, augment=saved.augment,
                               batch_size=batch, rank=0, world_size=1, device=CPU)
    again = evaluate(model, loader, device=CPU)["loss"]
    if abs(again - val_loss) > 1e-4 * max(1.0, abs(val_loss)):
        raise AssertionError(f"val loss {val_loss:.6f} when trained, {again:.6f} reloaded")
    return f"{Path(state['path']).name}: val loss {val_loss:.5f} trained, {again:.5f} reloaded"


def check_pipeline_rate(ctx: Context) -> str:
    """A short `bench pipeline`: the DALI CPU train loader's images/s on the generated data."""
    from alexnet_dali.bench.timing import cycle, measure
    from alexnet_dali.loader.train import build_train_loader

    batch = 16 if ctx.quick else 32
    loader = loader_config(ctx)
    tl = build_train_loader(ctx.data(), loader=loader, augment=AugmentConfig(), batch_size=batch,
                            rank=0, world_size=1, device=CPU, seed=0)
    reps = 1 if ctx.quick else 3
    rates = measure({"cpu": (cycle(tl), loader.prefetch)}, batch, 1, 3, reps, lambda: None)["cpu"]
    rate = statistics.median(rates)
    ctx.numbers[f"DALI CPU pipeline img/s ({ctx.threads} threads)"] = rate
    return f"{rate:,.0f} img/s (batch {batch}, {ctx.threads} threads, median of {reps})"


def check_gpu_graphs_trace(ctx: Context) -> str:
    """The GPU graphs trace (no CUDA needed) with the decoder `mixed` and the images on the GPU."""
    return gpu_graph_placement(ctx.data())


def gpu_graph_placement(data: Path) -> str:
    """Trace the device="gpu" graphs (DALI's private `_build_graph`; no CUDA needed): the decoder
    runs `mixed`, the images leave the graph on the GPU, the draws on the CPU."""
    from alexnet_dali.config.schema import LoaderConfig
    from alexnet_dali.loader.pipeline import pipeline_spec
    from alexnet_dali.pipelines.eval import eval_pipeline
    from alexnet_dali.pipelines.train import train_pipeline

    spec = pipeline_spec(data, "train", loader=LoaderConfig(), augment=AugmentConfig(), rank=0,
                         world_size=1, device=CPU)
    spec = dataclasses.replace(spec, device="gpu", dtype="float16", return_draws=True)
    args = dict(batch_size=2, num_threads=1, device_id=0)
    seen = []
    for name, pipe in (("train", train_pipeline(spec, seed=0, **args)),
                       ("ten-crop", eval_pipeline(spec, tencrop=True, **args))):
        if not hasattr(pipe, "_build_graph"):
            raise Skip("this DALI has no Pipeline._build_graph to trace the graphs with")
        pipe._build_graph()
        ops = [(op._op._operator_name().rsplit(".", 1)[-1], op._op.device) for op in pipe._ops]
        outputs = [node.device for node in pipe._graph_outputs]
        decoder = [device for op, device in ops if op == "image"]
        on_gpu = sorted({op for op, device in ops if device == "gpu"})
        if decoder != ["mixed"] or outputs[0] != "gpu" or "gpu" in outputs[1:-1]:
            raise AssertionError(f"{name} graph: decoder on {decoder}, outputs on {outputs}")
        seen.append(f"{name}: decoder mixed, on the GPU {', '.join(on_gpu)}")
    return "; ".join(seen)


CPU_CHECKS = [
    Check("cpu-train-graph", check_train_graph),
    Check("cpu-tencrop-graph", check_tencrop_graph),
    Check("cpu-decoder-vs-pillow", check_decoder_vs_pillow),
    Check("gpu-graphs-trace", check_gpu_graphs_trace),
    Check("model", check_model),
    Check("train-step", check_train_step),
    Check("checkpoint-round-trip", check_checkpoint),
    Check("bench-pipeline", check_pipeline_rate),
]


