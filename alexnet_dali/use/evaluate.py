"""`eval`: a checkpoint's top-1/top-5 error over a whole split of DATA, center or ten-crop, on
any number of ranks; the model is rebuilt from the checkpoint's own config."""

from __future__ import annotations

import dataclasses
from typing import Any

from tqdm import tqdm

from alexnet_dali.errors import ConfigError
from alexnet_dali.loader.build import eval_loader
from alexnet_dali.loader.data import open_data
from alexnet_dali.loader.integrity import unchecked_note
from alexnet_dali.model.checkpoint import (
    check_image_size,
    check_same_classes,
    load_checkpoint,
    model_from_checkpoint,
)
from alexnet_dali.train import distributed
from alexnet_dali.train.precision import precision_of
from alexnet_dali.train.health import stop_error
from alexnet_dali.train.validate import evaluate
from alexnet_dali.use.inference import class_names
from alexnet_dali.use.report import format_per_class, format_table, write_json


def evaluate_checkpoint(
    data: str, checkpoint: str, *, tencrop: bool = False, json_path: str | None = None,
    split: str = "val", batch_size: int = 64, device: str = "auto", workers: int | None = None,
    per_class: bool = False, skip_bad_samples: bool = False,
) -> dict[str, Any]:
    """`eval`: rebuild the model from the checkpoint's config, score `split` of DATA, report;
    `batch_size` images a batch on each rank; `per_class` adds accuracy and samples per class
    (by name), worst first. A damaged sample (loader/integrity.py) is an error, or with
    `skip_bad_samples` left out and counted."""
    info = distributed.setup(device)
    try:
        state = load_checkpoint(checkpoint)
        shards = open_data(data)  # DATA read once, passed down
        check_same_classes(state, shards.class_names, str(data))
        model, cfg = model_from_checkpoint(state)
        classes = shards.num_classes(cfg.model.num_classes)
        if classes != cfg.model.num_classes:
            raise ConfigError(f"{data}: {classes} classes, but {state['path']} was trained on "
                              f"{cfg.model.num_classes}; evaluate it on data with its classes")
        check_image_size(state, shards.image_size, f"{data}/manifest.json")
        model.to(info.device)
        precision = precision_of(cfg, info.device)
        cfg = dataclasses.replace(cfg, loader=dataclasses.replace(
            cfg.loader, shard_check="skip" if skip_bad_samples else "stop"))
        loader = eval_loader(shards, cfg, split=split, batch_size=batch_size, rank=info.rank,
                             world_size=info.world_size, device=info.device, tencrop=tencrop,
                             num_threads=workers)
        bar = tqdm(total=len(loader), desc=f"eval {split}" + (" ten-crop" if tencrop else ""),
                   unit="batch", disable=not info.is_main, leave=False)
        names = class_names(state, cfg, shards.manifest) if per_class else None
        result = evaluate(model, loader, device=info.device, precision=precision, tencrop=tencrop,
                          progress=bar, class_names=names)
        bar.close()
        report_damage(result, getattr(loader, "gate", None), data, split, info.is_main)
        result.update(views=10 if tencrop else 1, split=split, data=str(data),
                      checkpoint=state["path"], epoch=state["epoch"],
                      global_step=state["global_step"], world_size=info.world_size)
        if info.is_main:
            print_result(result, state, cfg.model.num_classes, per_class, json_path)
        return result
    finally:
        distributed.cleanup()


def print_result(result: dict[str, Any], state: dict[str, Any], classes: int, per_class: bool,
                 json_path: str | None) -> None:
    """What `eval` prints (and writes to --json) about its result."""
    crop = "ten-crop" if result["views"] == 10 else "center crop"
    print(f"scored {state['path']} (epoch {state['epoch']}, global step "
          f"{state['global_step']}) on {result['split']} of {result['data']}, {crop}:")
    print(format_table(result, classes))
    if per_class:
        print(format_per_class(result["per_class"], classes))
    if json_path:
        write_json(result, json_path)


def report_damage(result: dict[str, Any], gate: Any, data: str, split: str,
                  is_main: bool) -> None:
    """Damaged samples met: an error (every rank), or a line saying how many were left out."""
    note = unchecked_note(gate, data)
    if note and is_main:
        print(note)
    if result.pop("damaged_stop"):
        raise stop_error(gate.problems() if gate else [], data, "eval stops without a result "
                         "(pass --skip-bad-samples to score the split without such samples)")
    if result["skipped"] and is_main:
        print(f"left out {result['skipped']} damaged samples of {split} (not scored; "
              f"--skip-bad-samples); `alexnet-dali verify --decode {data}` lists them")
