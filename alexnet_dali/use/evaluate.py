"""`eval`: a checkpoint's top-1/top-5 error over a whole split of DATA, center or ten-crop, on
any number of ranks; the model is rebuilt from the checkpoint's own config."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from tqdm import tqdm

from alexnet_dali.train import distributed
from alexnet_dali.train.validate import evaluate
from alexnet_dali.use.report import format_per_class, format_table, write_json


def evaluate_checkpoint(
    data: str, checkpoint: str, *, tencrop: bool = False, json_path: str | None = None,
    split: str = "val", batch_size: int = 64, device: str = "auto", workers: int | None = None,
    per_class: bool = False, skip_bad_samples: bool = False,
) -> dict[str, Any]:
    """`eval`: rebuild the model from the checkpoint's config, score `split` of DATA, report;
    `per_class` adds accuracy and samples per class (by name), worst first. A damaged sample
    (loader_integrity.py) is an error, or with `skip_bad_samples` left out and counted."""
    from alexnet_dali.train.builders import image_size_of, precision_of, resolve_for_data
    from alexnet_dali.model.checkpoint import (
        check_image_size,
        check_same_classes,
        load_checkpoint,
        model_from_checkpoint,
    )
    from alexnet_dali.errors import ConfigError
    from alexnet_dali.use.inference import class_names

    info = distributed.setup(device)
    try:
        state = load_checkpoint(checkpoint)
        check_same_classes(state, str(data))
        model, cfg = model_from_checkpoint(state)
        classes = resolve_for_data(dataclasses.replace(cfg, data=str(data))).model.num_classes
        if classes != cfg.model.num_classes:
            raise ConfigError(f"{data}: {classes} classes, but {state['path']} was trained on "
                              f"{cfg.model.num_classes}; evaluate it on data with its classes")
        check_image_size(state, image_size_of(str(data)), f"{data}/manifest.json")
        model.to(info.device)
        precision = precision_of(cfg, info.device)
        cfg = dataclasses.replace(cfg, loader=dataclasses.replace(
            cfg.loader, shard_check="skip" if skip_bad_samples else "stop"))
        loader = _eval_loader(data, cfg, info, split, batch_size, workers, tencrop)
        bar = tqdm(total=len(loader), desc=f"eval {split}" + (" ten-crop" if tencrop else ""),
                   unit="batch", disable=not info.is_main, leave=False)
        names = class_names(state, cfg, data) if per_class else None
        result = evaluate(model, loader, device=info.device, precision=precision, tencrop=tencrop,
                          progress=bar, class_names=names)
        bar.close()
        _report_damage(result, getattr(loader, "gate", None), data, split, info.is_main)
        result.update(views=10 if tencrop else 1, split=split, data=str(data),
                      checkpoint=state["path"], epoch=state["epoch"],
                      global_step=state["global_step"], world_size=info.world_size)
        if info.is_main:
            crop = "ten-crop" if tencrop else "center crop"
            print(f"scored {state['path']} (epoch {state['epoch']}, global step "
                  f"{state['global_step']}) on {split} of {data}, {crop}:")
            print(format_table(result, cfg.model.num_classes))
            if per_class:
                print(format_per_class(result["per_class"], cfg.model.num_classes))
            if json_path:
                write_json(result, json_path)
        return result
    finally:
        distributed.cleanup()


def _report_damage(result: dict[str, Any], gate: Any, data: str, split: str,
                   is_main: bool) -> None:
    """Damaged samples met: an error (every rank), or a line saying how many were left out."""
    from alexnet_dali.train.health import stop_error
    from alexnet_dali.loader.integrity import unchecked_note

    note = unchecked_note(gate, data)
    if note and is_main:
        print(note)
    if result.pop("damaged_stop"):
        raise stop_error(gate.problems() if gate else [], data, "eval stops without a result "
                         "(pass --skip-bad-samples to score the split without such samples)")
    if result["skipped"] and is_main:
        print(f"left out {result['skipped']} damaged samples of {split} (not scored; "
              f"--skip-bad-samples); `alexnet-dali verify --decode {data}` lists them")


def _eval_loader(data: str, cfg: Any, info: Any, split: str, batch_size: int,
                 workers: int | None, tencrop: bool) -> Iterable:
    """The DALI eval loader for this rank (or the synthetic one for data `synthetic`)."""
    if data == "synthetic":
        from alexnet_dali.loader.synthetic import SyntheticEvalLoader

        return SyntheticEvalLoader(samples=2 * cfg.batch_size, batch_size=batch_size,
                                   num_classes=cfg.model.num_classes, rank=info.rank,
                                   world_size=info.world_size, device=info.device,
                                   tencrop=tencrop)
    from alexnet_dali.loader.eval import build_eval_loader

    loader_cfg = dataclasses.replace(cfg.loader, layout="NCHW",
                                     num_threads=workers or cfg.loader.num_threads)
    return build_eval_loader(data, split=split, loader=loader_cfg, augment=cfg.augment,
                             batch_size=batch_size, rank=info.rank,
                             world_size=info.world_size, device=info.device, tencrop=tencrop)
