"""Recognise how SRC holds ImageNet and list every split's images with their class ids.

The input layouts are a table, `LAYOUTS` (one row each: what it holds, how it is recognised, its
reader), detected from SRC's content in the table's order (`--layout NAME` overrides):
- `official`: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz;
- `kaggle`: LOC_synset_mapping.txt, LOC_val_solution.csv, ILSVRC/Data/CLS-LOC/{train,val,test};
- `hf`: Hugging Face parquet shards, data/{train,validation}-NNNNN-of-NNNNN.parquet (or in SRC);
- `folders`: train/<class>/..., val/<class>/... (or a flat val folder with --val-labels).
Class id = index in the sorted WNID (or folder name) list in every layout, so an image gets the
same id whichever layout it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from alexnet_dali.errors import DataError
from alexnet_dali.tools import hf, official
from alexnet_dali.tools.imagenet import (CLASSES, DEVKIT_DIR, DEVKIT_TAR, WNID, Classes,
                                         read_devkit, read_synset_words, size_warnings)
from alexnet_dali.tools.scan import SplitScan, list_classes, scan_flat, scan_image_folder

SPLITS = ("train", "val")
KAGGLE_MAPPING, KAGGLE_VAL = "LOC_synset_mapping.txt", "LOC_val_solution.csv"
KAGGLE_DATA = "ILSVRC/Data/CLS-LOC"
HF_CLASSES = "classes.py"  # beside data/ in Hugging Face's imagenet-1k: WNIDs and words
FOLDER_WORDS = "synset_words.txt"  # '<wnid> <words>' lines beside train/ (Caffe's name for it)
WORDS_FILES = ("'<wnid> <words>' lines: Kaggle's LOC_synset_mapping.txt, Caffe's "
               "synset_words.txt")


@dataclass(frozen=True)
class ReadOptions:
    """What the user said about SRC: split to build, labels and names files, known classes."""

    split: str | None = None
    val_labels: Path | None = None
    class_names: Path | None = None
    known: Classes | None = None  # the classes of shards already in OUT
    workers: int = 1
    progress: bool = False  # bars while listing (1.3 M tar headers or files take minutes)


@dataclass(frozen=True)
class Dataset:
    """A layout's classes and the scan of every split to build, plus notes for the user."""

    layout: str
    classes: Classes
    splits: dict[str, SplitScan]
    notes: tuple[str, ...] = ()
    class_where: str = "class {}"  # where a class's images come from, for messages
    warnings: tuple[str, ...] = ()  # likely mistakes in the data (the run goes on)


def detect_layout(src: Path, split: str | None = None) -> str:
    """The layout of SRC, from what it holds (the first row of LAYOUTS that recognises it); a
    DataError listing what was looked for."""
    for name, layout in LAYOUTS.items():
        if layout.detect(src, split):
            return name
    if (src / DEVKIT_TAR).exists():
        return "official"  # the devkit alone: the error says which tars are missing
    raise DataError(f"{src}: no known input layout; looked for {looked_for()}. Pass --layout "
                    f"NAME ({', '.join(LAYOUTS)}) or --split NAME for a single folder")


def looked_for() -> str:
    """What detection looks for, layout by layout (for messages)."""
    return ", ".join(f"{name} ({layout.looks_for})" for name, layout in LAYOUTS.items())


def read_dataset(src: Path, layout: str, options: ReadOptions) -> Dataset:
    """List the splits of SRC in `layout`, with class names and notes."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    dataset = LAYOUTS[layout].read(src, options)
    if options.class_names is not None and layout != "hf":
        dataset = replace(dataset, classes=dataset.classes.with_words(
            read_synset_words(options.class_names)))
    if not dataset.splits:
        raise DataError(f"{src}: no {options.split or 'train or val'} images found in the "
                        f"{layout} layout; looked for {looked_for()}")
    warnings = empty_class_warnings(dataset)
    wnids = all(WNID.fullmatch(n) for n in dataset.classes.names)
    if layout != "folders" or (wnids and len(dataset.classes.names) >= 0.9 * CLASSES):
        warnings += size_warnings(dataset.classes,
                                  {k: s.found for k, s in dataset.splits.items()})
    return replace(dataset, warnings=tuple(warnings))


def empty_class_warnings(dataset: Dataset) -> list[str]:
    """A warning per class without train images: it still takes an id, shifting later ones."""
    if "train" not in dataset.splits:
        return []
    counts = np.bincount(dataset.splits["train"].sources.labels,
                         minlength=len(dataset.classes.names))
    return [f"{dataset.class_where.format(name)} has no images: it still takes class id {i}, "
            "which shifts the id of every later class; remove it if it is not a class"
            for i, name in enumerate(dataset.classes.names) if counts[i] == 0]


def wanted(split: str | None) -> tuple[str, ...]:
    """The splits to build."""
    if split is not None and split not in SPLITS:
        raise DataError(f"--split {split!r}: this layout has the splits {', '.join(SPLITS)}")
    return SPLITS if split is None else (split,)


def read_official(src: Path, options: ReadOptions) -> Dataset:
    """The official tars; val needs the devkit, train uses it for class words when present."""
    present = [s for s, name in (("train", official.TRAIN_TAR), ("val", official.VAL_TAR))
               if s in wanted(options.split) and (src / name).exists()]
    has_devkit = (src / DEVKIT_TAR).exists() or (src / DEVKIT_DIR).is_dir()
    if "val" in present and not has_devkit:
        raise DataError(f"{src / official.VAL_TAR}: its labels are in {DEVKIT_TAR}; put the "
                        "devkit beside it, or build only train with --split train")
    devkit = read_devkit(src) if has_devkit else None
    notes = [] if devkit else [f"no {DEVKIT_TAR}: class words from the shards already in OUT"
                               if options.known is not None and any(options.known.words) else
                               f"no {DEVKIT_TAR}: class names are WNIDs only (no words)"]
    classes = devkit.classes if devkit else options.known or Classes.from_names(
        set(official.train_wnids(src / official.TRAIN_TAR)) if present else set())
    splits = {}
    if "train" in present:
        splits["train"] = official.scan_train_tar(src / official.TRAIN_TAR, classes,
                                                  options.workers, options.progress)
    if "val" in present:
        splits["val"] = official.scan_val_tar(src / official.VAL_TAR, classes, devkit)
    return Dataset("official", classes, splits, tuple(notes),
                   f"{src / official.TRAIN_TAR} member {{}}.tar")


def read_kaggle(src: Path, options: ReadOptions) -> Dataset:
    """Kaggle's ImageNet Object Localization Challenge download (test/ has no labels)."""
    words = read_synset_words(src / KAGGLE_MAPPING)
    classes = Classes.from_names(set(words), words)
    data, splits, notes = src / KAGGLE_DATA, {}, []
    if "train" in wanted(options.split) and (data / "train").is_dir():
        splits["train"] = scan_image_folder(data / "train", classes.ids(), options.progress)
    if "val" in wanted(options.split) and (data / "val").is_dir():
        if not (src / KAGGLE_VAL).exists():
            raise DataError(f"{src / KAGGLE_VAL}: not found; it holds the val labels "
                            "(or build only train with --split train)")
        splits["val"] = scan_flat(data / "val", src / KAGGLE_VAL, classes.names)
    if (data / "test").is_dir():
        notes.append(f"{data / 'test'}: skipped (the test images have no labels)")
    return Dataset("kaggle", classes, splits, tuple(notes), f"class folder {data}/train/{{}}")


def read_hf(src: Path, options: ReadOptions) -> Dataset:
    """Hugging Face imagenet-1k parquet shards; labels are already sorted-WNID indexes."""
    files = hf.parquet_files(src)
    names_file = options.class_names
    if names_file is None and (src / HF_CLASSES).is_file():
        names_file = src / HF_CLASSES
    classes = hf_classes(files, names_file)
    splits, notes = {}, [hf_names_note(classes, names_file, options.class_names is None)]
    for split in wanted(options.split):
        shards = files.get(hf.SPLIT_PREFIXES[split], [])
        if shards:
            splits[split], skipped = hf.scan_parquet(shards, classes, options.progress)
            if skipped:
                notes.append(f"{split}: skipped {skipped:,} unlabelled rows (label -1)")
    for prefix in sorted(set(files) - set(hf.SPLIT_PREFIXES.values())):
        notes.append(f"{prefix}-*.parquet: skipped ({len(files[prefix])} files; "
                     + ("the test images have no labels)" if prefix == "test" else "not a split "
                        "this tool builds)"))
    return Dataset("hf", classes, splits, tuple(n for n in notes if n))


def hf_classes(files: dict[str, list[Path]], class_names: Path | None) -> Classes:
    """From --class-names (sorted WNIDs); else ids as names, words from the shards' metadata."""
    if class_names is not None:
        words = read_synset_words(class_names)
        return Classes.from_names(set(words), words)
    first = next(iter(files.values()))[0]
    label_names = hf.class_label_names(first)
    count = len(label_names) if label_names else hf.max_label(files) + 1
    digits = len(str(count - 1))
    return Classes(tuple(f"{i:0{digits}d}" for i in range(count)),
                   tuple(label_names) if label_names else ("",) * count)


def hf_names_note(classes: Classes, names_file: Path | None, found: bool) -> str:
    """Where the hf classes' names and words come from, and how to get WNIDs without them."""
    if names_file is not None:
        return f"class names and words from {names_file}" if found else ""
    words = ("words from the shards' metadata" if any(classes.words) else
             "no words (the shards' metadata names no classes)")
    return (f"class names are the label ids {classes.names[0]}-{classes.names[-1]} (the parquet "
            f"shards hold no WNIDs), {words}; for WNIDs put the dataset repository's "
            f"{HF_CLASSES} in SRC, or pass --class-names FILE ({HF_CLASSES}, or {WORDS_FILES})")


def folder_words(src: Path, classes: Classes, options: ReadOptions) -> tuple[Classes, list[str]]:
    """Words from SRC/synset_words.txt (unless --class-names is given), and a hint when WNID
    folders have none."""
    if options.class_names is not None:
        return classes, []
    if (src / FOLDER_WORDS).is_file():
        return (classes.with_words(read_synset_words(src / FOLDER_WORDS)),
                [f"class words from {src / FOLDER_WORDS}"])
    if classes.names and not any(classes.words) and all(WNID.fullmatch(n) for n in classes.names):
        return classes, [f"the classes are WNID folders without words (predict and eval show "
                         f"the WNIDs): pass --class-names FILE ({WORDS_FILES}) or put such a "
                         f"file in SRC as {FOLDER_WORDS}"]
    return classes, []


def read_folders(src: Path, options: ReadOptions) -> Dataset:
    """ImageFolder trees (SRC/train, SRC/val, or SRC itself with --split) or a flat val folder."""
    if options.split is not None:
        roots = {options.split: src / options.split if (src / options.split).is_dir() else src}
    else:
        roots = {name: src / name for name in SPLITS if (src / name).is_dir()}
    if "train" in roots:
        classes = Classes.from_names(list_classes(roots["train"]))
    elif options.known is not None:
        classes = options.known
    else:
        raise DataError(f"{src}: building {', '.join(roots)} needs the train class list; "
                        "preprocess the train split into this output folder first")
    splits = {}
    for name, root in roots.items():
        flat = options.val_labels is not None and name != "train"
        splits[name] = scan_flat(root, options.val_labels, classes.names) if flat else \
            scan_image_folder(root, classes.ids(), options.progress)
    where = f"class folder {roots['train']}/{{}}" if "train" in roots else "class {}"
    notes: list[str] = []
    if "train" in roots:  # else the classes (and their words) are OUT's
        classes, notes = folder_words(src, classes, options)
    return Dataset("folders", classes, splits, tuple(notes), where)


@dataclass(frozen=True)
class Layout:
    """One way SRC can hold ImageNet: what it holds (--help), what detection looks for
    (messages), how it is recognised and how it is read."""

    holds: str
    looks_for: str
    detect: Callable[[Path, str | None], bool]  # (SRC, --split) -> is it this layout?
    read: Callable[[Path, ReadOptions], Dataset]


# One row per input layout, in detection order (the first whose `detect` holds is taken).
LAYOUTS = {
    "official": Layout(
        f"{official.TRAIN_TAR}, {official.VAL_TAR}, {DEVKIT_TAR}",
        f"{official.TRAIN_TAR}, {official.VAL_TAR} or {DEVKIT_TAR}",
        lambda src, split: any((src / name).exists()
                               for name in (official.TRAIN_TAR, official.VAL_TAR)),
        read_official),
    "kaggle": Layout(
        f"{KAGGLE_MAPPING}, {KAGGLE_VAL}, {KAGGLE_DATA}/", f"{KAGGLE_MAPPING} or {KAGGLE_DATA}/",
        lambda src, split: (src / KAGGLE_MAPPING).exists() or (src / KAGGLE_DATA).is_dir(),
        read_kaggle),
    "hf": Layout(
        "Hugging Face imagenet-1k: data/{train,validation}-*.parquet",
        "*.parquet in SRC or SRC/data/", lambda src, split: bool(hf.parquet_files(src)), read_hf),
    "folders": Layout(  # also beside the devkit: torchvision's root once the tars are gone
        "train/<class>/..., val/<class>/... (or a flat val folder + --val-labels)",
        "train/ or val/ class folders",
        lambda src, split: split is not None or any((src / name).is_dir() for name in SPLITS),
        read_folders),
}
