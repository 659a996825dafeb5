"""Find the source images of a split: ImageFolder trees or a flat folder with a labels file.

Symlinked files and folders are followed (ImageNet subsets are often symlink farms); every real
folder is entered once, so a symlink loop neither hangs the scan nor repeats images, and a file
reached twice (two links to one file) is kept once and the other path rejected as a duplicate.
Every regular file is a candidate: the image type is decided later from the content.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from alexnet_dali.errors import DataError


@dataclass(frozen=True)
class Source:
    """One found file: path relative to the split root (POSIX) and its class id."""

    rel: str
    label: int


@dataclass(frozen=True)
class Reject:
    """A found file that is not written, with a reason slug and detail."""

    rel: str
    reason: str
    detail: str


@dataclass(frozen=True)
class SplitScan:
    """The result of scanning one split: its root, sources sorted by `rel`, scan-time rejects."""

    root: str
    sources: tuple[Source, ...]
    rejects: tuple[Reject, ...]

    @property
    def found(self) -> int:
        """Files found (written or rejected in the end)."""
        return len(self.sources) + len(self.rejects)


def walk_files(root: Path) -> tuple[list[str], list[Reject]]:
    """Relative POSIX paths of all files under `root` (symlinks followed, each folder once),
    and a reject per folder that could not be listed."""
    seen_dirs: set[tuple[int, int]] = set()
    found: list[str] = []
    errors: list[Reject] = []

    def unlisted(e: OSError) -> None:
        rel = os.path.relpath(e.filename, root) if e.filename else "."
        errors.append(Reject(Path(rel).as_posix() + "/", "unreadable", f"folder: {e.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        found.extend((rel_dir / name).as_posix() for name in filenames)
    return sorted(found), errors


def list_classes(split_root: Path) -> list[str]:
    """Sorted class folder names (symlinked folders included) of an ImageFolder split."""
    if not split_root.is_dir():
        raise DataError(f"{split_root}: not a folder; expected an ImageFolder "
                        "(one folder per class)")
    classes = sorted(p.name for p in split_root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{split_root}: no class folders found; expected <class>/<image> files")
    return classes


def _dedupe(root: Path, rels: list[str], labels: dict[str, int],
            rejects: list[Reject]) -> list[Source]:
    """Sources for labelled files; a second path to the same file becomes a duplicate reject."""
    first_path: dict[tuple[int, int], str] = {}
    sources = []
    for rel in rels:
        path = root / rel
        try:
            st = os.stat(path)
        except OSError as e:
            rejects.append(Reject(rel, "unreadable", f"{type(e).__name__}: {e.strerror}"))
            continue
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            rejects.append(Reject(rel, "unreadable", "not a regular file"))
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in first_path:
            rejects.append(Reject(rel, "duplicate", f"same file as {first_path[ident]}"))
            continue
        first_path[ident] = rel
        sources.append(Source(rel, labels[rel]))
    return sources


def scan_image_folder(split_root: Path, class_ids: dict[str, int]) -> SplitScan:
    """Scan `<split_root>/<class>/**`; a class folder not in `class_ids` is a DataError."""
    rels, rejects = walk_files(split_root)
    labels: dict[str, int] = {}
    for cls in list_classes(split_root):
        if cls not in class_ids:
            raise DataError(
                f"{split_root / cls}: class {cls!r} is not among the train classes; "
                "remove the folder or preprocess train with it"
            )
    for rel in rels:
        head, sep, _ = rel.partition("/")
        if not sep:
            rejects.append(Reject(rel, "no-class-folder", "file directly in the split folder"))
        else:
            labels[rel] = class_ids[head]
    labelled = [r for r in rels if r in labels]
    sources = _dedupe(split_root, labelled, labels, rejects)
    return SplitScan(str(split_root.absolute()), tuple(sources), tuple(rejects))


def read_val_labels(path: Path, class_ids: dict[str, int]) -> dict[str, int]:
    """`name class` lines (space, tab or comma separated; LOC_val_solution.csv works) -> ids.

    Names match a file's name or its name without extension.
    """
    labels: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read the val labels file ({e.strerror})") from None
    for number, line in enumerate(lines, 1):
        fields = [f for f in re.split(r"[\s,]+", line.strip()) if f]
        if not fields or fields[0].startswith("#") or fields[0] == "ImageId":
            continue
        if len(fields) < 2:
            raise DataError(f"{path}:{number}: expected '<file name> <class>', got {line!r}")
        name, cls = fields[0], fields[1]
        if cls not in class_ids:
            raise DataError(
                f"{path}:{number}: class {cls!r} is not among the train classes; "
                "check the labels file or the train folder"
            )
        labels[name] = class_ids[cls]
    return labels


def scan_flat(folder: Path, labels_file: Path, class_ids: dict[str, int]) -> SplitScan:
    """Scan a flat folder (ILSVRC-2012 val) whose labels come from `labels_file`."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    by_name = read_val_labels(labels_file, class_ids)
    rels, rejects = walk_files(folder)
    labels: dict[str, int] = {}
    for rel in rels:
        name = rel.rsplit("/", 1)[-1]
        label = by_name.get(name, by_name.get(name.split(".", 1)[0]))
        if label is None:
            rejects.append(Reject(rel, "no-label", f"not listed in {labels_file}"))
        else:
            labels[rel] = label
    labelled = [r for r in rels if r in labels]
    sources = _dedupe(folder, labelled, labels, rejects)
    return SplitScan(str(folder.absolute()), tuple(sources), tuple(rejects))
