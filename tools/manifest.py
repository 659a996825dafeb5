"""`OUT/manifest.json`: its writer, which merges a run's bookkeeping files (`records`), and
its one typed reader, `read_manifest`: everyone else reads the manifest through it
(docs/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet_dali.errors import DataError
from alexnet_dali.tools.outdir import naming, temp_path, write_json_atomic
from alexnet_dali.tools.records import (merged_classes, read_json, read_plans, shard_done,
                                        shard_stem, sidecar_path)
from alexnet_dali.tools.storage import LocalStore, Store, open_store

MANIFEST_NAME = "manifest.json"
FORMAT = "alexnet-dali-shards"
FORMAT_VERSION = 1


def _split_entry(out: Path, split: str, plan: dict) -> tuple[dict, list[list[str]]]:
    """Manifest entry and all rejects (rel, reason, detail) of one split."""
    missing = [i for i in range(plan["shards"]) if not shard_done(out, split, i)]
    if missing:
        raise DataError(
            f"{out / split}: {len(missing)} of {plan['shards']} shards are not finished "
            f"(first: {shard_stem(split, missing[0])}); run the remaining preprocess parts first"
        )
    shards, rejects = [], list(plan["rejects"])
    for i in range(plan["shards"]):
        info = read_json(sidecar_path(out, split, i))
        rejects.extend(info["rejects"])
        if info["tar"] is not None:
            # "size" (bytes of the tar) is absent from records written before it was added
            shards.append({k: info[k] for k in ("tar", "index", "samples", "sha256", "size")
                           if k in info})
    written = sum(s["samples"] for s in shards)
    entry = {"shards": shards, "samples": written, "found": plan["found"], "written": written,
             "rejected": len(rejects), "rejects_file": f"{split}/rejects.tsv",
             "reject_reasons": dict(sorted(Counter(r[1] for r in rejects).items()))}
    if written + len(rejects) != plan["found"]:
        raise DataError(f"{out / split}: found {plan['found']} != written {written} + rejected "
                        f"{len(rejects)}; delete the split folder and re-run preprocess")
    return entry, sorted(rejects)


def write_rejects(path: Path, rejects: list[list[str]]) -> None:
    """`rejects.tsv`: header, then `path<TAB>reason<TAB>detail` per rejected file."""
    clean = [[f.replace("\t", " ").replace("\n", " ") for f in row] for row in rejects]
    text = "path\treason\tdetail\n" + "".join("\t".join(row) + "\n" for row in clean)
    tmp = temp_path(path)
    try:
        with naming(tmp):
            tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_manifest(out: str | Path) -> dict:
    """Merge every split's plan and shard records into `OUT/manifest.json`; returns it."""
    out = Path(out)
    plans = read_plans(out)
    if not plans:
        raise DataError(f"{out}: no preprocess output found (no */_plan.json); run preprocess")
    classes = merged_classes(plans, out)  # the WNIDs must match; words fill in each other
    first = next(iter(plans.values()))
    splits = {}
    for split, plan in plans.items():
        if plan.get("settings") != first.get("settings"):
            raise DataError(f"{out / split}: its settings differ from the other splits'; "
                            "preprocess every split with the same options")
        splits[split], rejects = _split_entry(out, split, plan)
        write_rejects(out / split / "rejects.tsv", rejects)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "classes": [{"id": i, "name": name, "words": words} for i, (name, words) in
                    enumerate(zip(classes.names, classes.words))],
        "splits": splits,
        "totals": {k: sum(s[k] for s in splits.values()) for k in ("found", "written", "rejected")},
        "settings": first["settings"],
    }
    write_json_atomic(out / MANIFEST_NAME, manifest)
    return manifest


@dataclass(frozen=True)
class ClassEntry:
    """One class: `id` (the label stored in the shards), `name` (its WNID or source folder) and
    `words` (human-readable, "" when unknown).

    New per-class fields get defaults here, so that manifests written before them still read;
    unknown keys of a newer manifest are ignored by `read_manifest`.
    """

    id: int
    name: str
    words: str = ""


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a split: tar and index paths (relative to OUT), samples, tar sha256 and size."""

    tar: str
    index: str | None
    samples: int
    sha256: str | None = None
    size: int | None = None  # bytes of the tar; None in manifests written before it was recorded


@dataclass(frozen=True)
class SplitEntry:
    """A split's shards in manifest order and its sample count."""

    shards: tuple[ShardEntry, ...]
    samples: int


@dataclass(frozen=True)
class Manifest:
    """A read `OUT/manifest.json`; `sha256` is the hash of the file's bytes (the manifest hash).

    `store` is where the shard folder lives (`tools.storage`: a local folder or an S3 prefix);
    `path` names the file: a Path for a local folder, the `s3://` URL otherwise.
    """

    path: Path | str
    sha256: str
    classes: tuple[ClassEntry, ...]
    splits: dict[str, SplitEntry]
    settings: dict[str, Any]
    totals: dict[str, int]
    raw: dict[str, Any] = field(compare=False, repr=False)  # the parsed JSON, for what is not typed
    store: Store = field(default=LocalStore(Path(".")), compare=False, repr=False)

    @property
    def root(self) -> Path | str:
        """The shard folder OUT (paths in the manifest are relative to it): a Path, or the
        `s3://` URL of the prefix."""
        return self.store.root if isinstance(self.store, LocalStore) else str(self.store)

    def url(self, rel: str) -> str:
        """Where a file the manifest lists (`train/train-000000.tar`) is: a path or a URL."""
        return self.store.url(rel)

    def split(self, name: str) -> SplitEntry:
        """The entry of split `name`; a DataError naming the splits there are otherwise."""
        if name not in self.splits:
            raise DataError(f"{self.path}: no split {name!r} (have {sorted(self.splits)}); "
                            f"preprocess it into {self.root}")
        return self.splits[name]

    def split_fingerprint(self, name: str = "train") -> str:
        """sha256 over a split's shard hashes in manifest order: the data pca.json was computed
        from. Unlike the manifest hash it does not change when another split is (re)built."""
        digest = hashlib.sha256()
        for shard in self.split(name).shards:
            digest.update(str(shard.sha256).encode("ascii"))
        return digest.hexdigest()


def _typed(cls: type, value: Any, path: Path, where: str) -> Any:
    """Dataclass `cls` from a JSON object, taking its known keys; a DataError if one is missing."""
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in value.items() if k in names})
    except (AttributeError, TypeError) as e:
        raise DataError(f"{path}: {where} is malformed ({e}); re-run `alexnet-dali preprocess` "
                        "(or merge-manifest) to rewrite it") from None


IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SOURCE_ARCHIVES = ("ILSVRC2012_img_*.tar", "*.parquet")  # ImageNet as downloaded


def holds_source_images(folder: Path, depth: int = 3, budget: int = 2000) -> bool:
    """True when `folder` has image files within `depth` levels (an ImageFolder tree:
    SRC/train/<class>/x.JPEG) or ImageNet's download archives; looks at ≤ `budget` entries."""
    if any(next(folder.glob(pattern), None) for pattern in SOURCE_ARCHIVES):
        return True
    level = [folder]
    for _ in range(depth + 1):
        below = []
        for entry in (e for d in level for e in _entries(d)):
            budget -= 1
            if budget < 0:
                return False
            if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
                return True
            if entry.is_dir():
                below.append(entry)
        level = below
    return False


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def missing_manifest_message(out: str | Path | Store, command: str | None = None) -> str:
    """Why OUT has no manifest and exactly what to run: the shard folder when OUT is a split
    folder inside it, `preprocess OUT SHARDS` (beside OUT) when OUT holds source images;
    `command` (e.g. "train") is named as the step after."""
    store = open_store(out)
    if store.remote:
        return (f"{store.url(MANIFEST_NAME)}: not found ({store.why_missing(MANIFEST_NAME)}); "
                f"check the bucket and prefix, or upload the shard folder first: "
                f"`aws s3 sync SHARDS {store}` (docs/DATA.md)")
    out = store.root
    path = out / MANIFEST_NAME
    then = f"`alexnet-dali {command} {{}}`" if command else "pass {}"
    if (out.parent / MANIFEST_NAME).is_file():
        return (f"{path}: not found: {out} is the {out.name!r} folder inside the shard folder "
                f"{out.parent}; use the shard folder: " + then.format(out.parent))
    if out.is_dir() and holds_source_images(out):
        src = out.parent if out.name in ("train", "val") else out  # SRC/train given for SRC
        name = src.name or src.resolve().name
        shards = src.parent / f"{name}-shards"
        return (f"{path}: not found: {out} holds source images, not shards; run `alexnet-dali "
                f"preprocess {src} {shards}` first, then " + then.format(shards))
    return f"{path}: not found; run `alexnet-dali preprocess SRC {out}` first"


def require_manifest(out: str | Path, command: str) -> None:
    """A DataError saying exactly what to run when OUT is not a shard folder (no manifest)."""
    if open_store(out).size(MANIFEST_NAME) is None:
        raise DataError(missing_manifest_message(out, command))


def read_manifest(out: str | Path | Store) -> Manifest:
    """Read and check `OUT/manifest.json` (a local folder or an `s3://` prefix); every problem is
    a DataError naming the file."""
    store = open_store(out)
    path = store.root / MANIFEST_NAME if isinstance(store, LocalStore) else store.url(MANIFEST_NAME)
    try:
        data = store.read_bytes(MANIFEST_NAME)
    except FileNotFoundError:
        raise DataError(missing_manifest_message(out)) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); re-run `alexnet-dali preprocess` "
                        "(or merge-manifest) to rewrite it") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f"{path}: not an {FORMAT} manifest; run `alexnet-dali preprocess SRC "
                        f"{store}` to write the shards")
    splits = {}
    for name, entry in raw.get("splits", {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("samples"), int):
            raise DataError(f"{path}: split {name!r} is malformed (no sample count); re-run "
                            "`alexnet-dali preprocess` (or merge-manifest) to rewrite it")
        shards = tuple(_typed(ShardEntry, s, path, f"split {name!r} shard {i}")
                       for i, s in enumerate(entry.get("shards", [])))
        splits[name] = SplitEntry(shards, entry["samples"])
    classes = tuple(_typed(ClassEntry, c, path, f"class {i}")
                    for i, c in enumerate(raw.get("classes", [])))
    return Manifest(path=path, sha256=hashlib.sha256(data).hexdigest(), classes=classes,
                    splits=splits, settings=dict(raw.get("settings", {})),
                    totals=dict(raw.get("totals", {})), raw=raw, store=store)
