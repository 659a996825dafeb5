"""`bench train`: training images/s with synthetic input vs fed by the DALI pipeline, in one run.

Both sources drive the same model, optimiser and step function; synthetic input is one batch
already on the device (pure compute), so DALI/synthetic < 1 means the pipeline starves the model.
The sources take turns (`ROUNDS` rounds, every other one in reverse order), so that on a shared
machine both see the same background load.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import torch
from tqdm import tqdm

from alexnet_dali.config.resolve import from_dict
from alexnet_dali.config.schema import TrainConfig
from alexnet_dali.train.distributed import DistInfo, pick_device
from alexnet_dali.train.steps import TrainStep, endless


ROUNDS = 3  # turns per source; the timed steps are split between them


def _run_steps(step: TrainStep, batches: Iterator, steps: int, progress: tqdm) -> int:
    """`steps` training steps, waited for on the device; the images they trained on."""
    images_done = 0
    loss = None
    for _ in range(steps):
        images, labels = next(batches)
        loss = step(images, labels).loss
        images_done += images.shape[0]
        progress.update()
    if loss is not None:
        loss.item()  # wait for the device
    if step.input_device.type == "cuda":
        torch.cuda.synchronize(step.input_device)
    return images_done


def time_sources(step: TrainStep, sources: dict[str, Iterator], steps: int,
                 warmup: int) -> dict[str, float]:
    """Images/s per source over `steps` timed steps each, after `warmup` untimed ones; the timed
    steps run in `ROUNDS` turns per source, every other round in reverse order."""
    rounds = max(1, min(ROUNDS, steps))
    shares = [steps * (r + 1) // rounds - steps * r // rounds for r in range(rounds)]
    images = {name: 0 for name in sources}
    seconds = {name: 0.0 for name in sources}
    with tqdm(total=(warmup + steps) * len(sources), desc="bench train", leave=False) as bar:
        for batches in sources.values():
            _run_steps(step, batches, warmup, bar)
        for r, share in enumerate(shares):
            for name in (list(sources) if r % 2 == 0 else list(reversed(sources))):
                start = time.perf_counter()
                images[name] += _run_steps(step, sources[name], share, bar)
                seconds[name] += time.perf_counter() - start
    return {name: images[name] / seconds[name] for name in sources}


def run_bench(data: str | None, *, batch_size: int, steps: int, warmup: int, device: str,
              precision: str, workers: int | None, threads: int, compile: bool) -> dict[str, Any]:
    """Measure and print synthetic and (with DATA) DALI-fed training images/s and their ratio."""
    from alexnet_dali.train.builders import (
        build_loaders,
        build_network,
        channels_last_of,
        resolve_for_data,
    )
    from alexnet_dali.train.precision import precision_of
    from alexnet_dali.loader.data import SYNTHETIC, open_data
    from alexnet_dali.train.optim import build_optimizer
    from alexnet_dali.loader.synthetic import SyntheticTrainLoader

    if threads:
        torch.set_num_threads(threads)
    # Synthetic unit-std input through N(0, 0.01) weights gives denormal activations, which are
    # many times slower on a CPU than the real 0-255-scale input; flush them so that both sources
    # time the same arithmetic.
    torch.set_flush_denormal(True)
    values = {"data": data or SYNTHETIC, "batch_size": batch_size, "device": device,
              "precision": precision, "compile": compile}
    if workers:
        values["loader"] = {"num_threads": workers}
    cfg = from_dict(TrainConfig, values, where="bench train")
    dataset = open_data(cfg.data)
    cfg = resolve_for_data(cfg, dataset)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=pick_device(device))
    net, input_device = build_network(cfg, info)
    model = torch.compile(net) if compile else net
    step = TrainStep(model, build_optimizer(net.parameters(), cfg.optim), input_device,
                     precision_of(cfg, info.device))
    synthetic = SyntheticTrainLoader(
        batch_size=batch_size, steps_per_epoch=10**9, num_classes=cfg.model.num_classes,
        device=input_device, fixed=True, channels_last=channels_last_of(cfg, input_device))
    sources = {"synthetic": iter(synthetic)}
    if data:
        train_loader, _ = build_loaders(cfg, dataset, info, input_device, None)
        sources["dali"] = endless(train_loader)
    rates = time_sources(step, sources, steps, warmup)
    result: dict[str, Any] = {
        "device": str(info.device), "precision": step.precision, "batch_size": batch_size,
        "steps": steps, "threads": torch.get_num_threads(),
        "synthetic_images_per_s": rates["synthetic"],
    }
    if data:
        result["dali_images_per_s"] = rates["dali"]
        result["ratio"] = result["dali_images_per_s"] / result["synthetic_images_per_s"]
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    print(f"device {result['device']}  precision {result['precision']}  batch "
          f"{result['batch_size']}  steps {result['steps']}  torch threads {result['threads']}")
    print(f"{'input':<12}{'images/s':>12}")
    print(f"{'synthetic':<12}{result['synthetic_images_per_s']:>12.2f}")
    if "dali_images_per_s" in result:
        print(f"{'DALI':<12}{result['dali_images_per_s']:>12.2f}")
        print(f"ratio DALI/synthetic: {result['ratio']:.3f}")
