"""A preprocess run's bookkeeping in OUT: split plans, per-shard records, part locks.

Per split, `OUT/<split>/_plan.json` records the scan (classes and their words, found, shard
count, scan-time rejects, settings) and each finished shard leaves `<split>-NNNNNN.json`
(samples, sha256, size, its rejects, key -> source name), written last and atomically: it is
the mark that the shard is complete. `manifest.write_manifest` merges these files into
manifest.json, so `--part i/n` runs on many hosts merge into one manifest. While a run builds
part i of n of a split, it holds the lock `OUT/<split>/.lock-part-i-of-n`.

Class words are not part of what must match between runs into one OUT: a run without words
(official train tar without the devkit) and one with them (val + devkit) fill in each other's;
other words for the same class are an error naming both sources.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alexnet_dali.errors import DataError
from alexnet_dali.tools.imagenet import Classes
from alexnet_dali.tools.outdir import FolderInUse, FolderLock, held_by_other, write_json_atomic
from alexnet_dali.tools.scan import SplitScan

PLAN_NAME = "_plan.json"
WORDS_KEY = "class_words"


def read_json(path: Path) -> Any:
    """Read a JSON file, naming it in the error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e}); delete it and re-run preprocess") from None


def lock_part(out: Path, split: str, part: tuple[int, int]) -> FolderLock:
    """Hold the lock of this part of a split (one per part: hosts share OUT in `--part i/n` runs).

    A run cut into another number of parts n' overlaps ours, so a live holder of any
    `-of-n'` lock of the split is refused too.
    """
    i, n = part
    lock = FolderLock(out / split / f".lock-part-{i}-of-{n}",
                      f"wait for it to end; part {i}/{n} of {split} runs once at a time")
    lock.acquire()
    for other in (out / split).glob(".lock-part-*-of-*"):
        holder = None if other.name.endswith(f"-of-{n}") else held_by_other(other)
        if holder:
            lock.release()
            raise FolderInUse(
                f"{out / split}: {holder} is building it as {other.name[len('.lock-'):]}; parts "
                f"that run at the same time must all use --part i/{other.name.rsplit('-', 1)[1]}")
    return lock


def shard_stem(split: str, index: int) -> str:
    """Shard file stem (`train-000012`)."""
    return f"{split}-{index:06d}"


def sidecar_path(out: Path, split: str, index: int) -> Path:
    """Path of the completion record of a shard."""
    return out / split / f"{shard_stem(split, index)}.json"


def shard_done(out: Path, split: str, index: int) -> bool:
    """True when the shard's record exists and its tar and index are in place."""
    record = sidecar_path(out, split, index)
    if not record.exists():
        return False
    info = read_json(record)
    return info["tar"] is None or ((out / info["tar"]).exists() and (out / info["index"]).exists())


def shard_records(out: Path, split: str) -> list[dict]:
    """The records of a split's finished shards, by shard index (`sources`: [key, name] pairs)."""
    return [read_json(path) for path in sorted((out / split).glob(f"{split}-*.json"))]


def read_plans(out: Path) -> dict[str, dict]:
    """split -> its saved plan, for every split planned under OUT."""
    return {path.parent.name: read_json(path) for path in sorted(out.glob(f"*/{PLAN_NAME}"))}


def all_shards_done(out: Path) -> bool:
    """True when every split planned under OUT has all its shards complete."""
    plans = read_plans(out)
    return bool(plans) and all(shard_done(out, split, i) for split, plan in plans.items()
                               for i in range(plan["shards"]))


def plan_classes(plan: dict) -> Classes:
    """The classes a plan records, with their words ("" where that run had none)."""
    names = tuple(plan["classes"])
    return Classes(names, tuple(plan.get(WORDS_KEY) or [""] * len(names)))


def merged_classes(plans: dict[str, dict], out: Path) -> Classes:
    """The classes of every split's plan, words merged; a DataError when the WNIDs differ or a
    class has other words in two plans."""
    (first, plan), *others = plans.items()
    classes = plan_classes(plan)
    for split, other in others:
        theirs = plan_classes(other)
        if theirs.names != classes.names:
            raise DataError(f"{out / split}: made from {len(theirs.names)} other classes than "
                            f"{out / first}'s {len(classes.names)}; preprocess every split "
                            "with the same classes, or use a new output folder")
        classes = classes.merged(theirs, f"{out / first / PLAN_NAME}", f"{out / split / PLAN_NAME}")
    return classes


def make_plan(split: str, found: SplitScan, classes: Classes, shards: int, settings: dict) -> dict:
    """A split's plan: its scan, classes with their words, shard count and settings."""
    return {"split": split, "classes": list(classes.names), WORDS_KEY: list(classes.words),
            "found": found.found, "sources": len(found.sources),
            "sources_sha256": found.sources.sha256(), "shards": shards, "settings": settings,
            "rejects": [[r.rel, r.reason, r.detail] for r in found.rejects]}


def checked_plan(out: Path, split: str, plan: dict) -> dict:
    """The plan to save for a split: a DataError if OUT/<split> holds shards of other inputs or
    settings (the words aside); the saved plan's words fill in this one's."""
    path = out / split / PLAN_NAME
    if not path.exists():
        return plan
    old = read_json(path)
    if any(old.get(k) != v for k, v in plan.items() if k != WORDS_KEY):
        raise DataError(f"{path}: {out / split} holds shards made from other inputs or settings; "
                        "use a new output folder or delete this split folder")
    words = plan_classes(plan).merged(plan_classes(old), "SRC", str(path)).words
    return {**plan, WORDS_KEY: list(words)}


def check_settings(out: Path, settings: dict, splits: set[str]) -> None:
    """A DataError before any work if a split in OUT that this run does not build was made with
    other settings (the manifest needs one set for all splits)."""
    for split, plan in read_plans(out).items():
        if split not in splits and plan.get("settings") != settings:
            keys = sorted(k for k in set(plan.get("settings") or {}) | set(settings)
                          if (plan.get("settings") or {}).get(k) != settings.get(k))
            raise DataError(f"{out / split}: made with other settings ({', '.join(keys)}); "
                            "preprocess every split with the same options, or use a new "
                            "output folder")


def write_plan(out: Path, split: str, plan: dict) -> None:
    """Save a split's plan (checked and merged with the saved one, `checked_plan`)."""
    plan = checked_plan(out, split, plan)
    (out / split).mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / split / PLAN_NAME, plan)
