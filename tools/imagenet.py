"""ImageNet's class lists and label files: the devkit's meta.mat, Kaggle's and TF's label files.

Class id = index in the sorted WNID list, in every layout. The devkit's own ILSVRC2012_IDs are
NOT in that order (ID 1 is n02119789, while the first sorted WNID is n01440764), so an ID is only
ever used to find a WNID, never as a class id.
"""

from __future__ import annotations

import ast
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from alexnet_dali.errors import DataError

DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
META_MAT = f"{DEVKIT_DIR}/data/meta.mat"
GROUND_TRUTH = f"{DEVKIT_DIR}/data/ILSVRC2012_validation_ground_truth.txt"
CLASSES, TRAIN_IMAGES, VAL_IMAGES = 1000, 1_281_167, 50_000  # ImageNet-1k (ILSVRC-2012)
WNID = re.compile(r"n\d{8}")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


@dataclass(frozen=True)
class Classes:
    """Class names (sorted WNIDs or folder names; id = index) and human-readable words."""

    names: tuple[str, ...]
    words: tuple[str, ...]

    @classmethod
    def from_names(cls, names: list[str] | set[str], words: dict[str, str] | None = None
                   ) -> Classes:
        """Sorted names; words looked up by name ("" where unknown)."""
        ordered = tuple(sorted(names))
        return cls(ordered, tuple((words or {}).get(name, "") for name in ordered))

    def ids(self) -> dict[str, int]:
        """name -> class id."""
        return {name: i for i, name in enumerate(self.names)}

    def with_words(self, words: dict[str, str]) -> Classes:
        """The same classes, words replaced where `words` has the name."""
        return Classes(self.names, tuple(words.get(n, w) for n, w in zip(self.names, self.words)))

    def merged(self, other: Classes, here: str, there: str) -> Classes:
        """The same classes with the words of both: one side's words fill in the other's ""; a
        class with other words on each side is a DataError naming both (`here`, `there`: where
        each side's words come from). The names must be equal (the caller checks them)."""
        words = []
        for name, mine, theirs in zip(self.names, self.words, other.words):
            if mine and theirs and mine != theirs:
                raise DataError(f"class {name}: {here} says {mine!r} but {there} says "
                                f"{theirs!r}; use one class-names source, or a new output folder")
            words.append(mine or theirs)
        return Classes(self.names, tuple(words))


@dataclass(frozen=True)
class Devkit:
    """What the devkit says: the 1000 leaf classes and the WNID of every val image by number."""

    classes: Classes
    val_wnids: tuple[str, ...]  # [i - 1]: the WNID of ILSVRC2012_val_{i:08d}


def read_devkit(src: Path) -> Devkit:
    """The devkit from SRC/ILSVRC2012_devkit_t12.tar.gz or extracted, SRC/ILSVRC2012_devkit_t12/."""
    folder, archive = src / DEVKIT_DIR, src / DEVKIT_TAR
    try:
        if folder.is_dir():
            meta, truth = (src / META_MAT).read_bytes(), (src / GROUND_TRUTH).read_bytes()
        else:
            with tarfile.open(archive, "r:gz") as tar:
                meta, truth = (tar.extractfile(m).read() for m in (META_MAT, GROUND_TRUTH))
    except (OSError, tarfile.TarError, KeyError, AttributeError) as e:
        raise DataError(f"{folder if folder.is_dir() else archive}: cannot read {META_MAT} and "
                        f"{GROUND_TRUTH} ({e}); download the devkit again") from None
    id_to_wnid, words = parse_meta(meta, src / META_MAT)
    val_wnids = []
    for number, line in enumerate(truth.decode().split(), 1):
        if not line.isdigit() or int(line) not in id_to_wnid:
            raise DataError(f"{GROUND_TRUTH}:{number}: {line!r} is not a class ILSVRC2012_ID")
        val_wnids.append(id_to_wnid[int(line)])
    return Devkit(Classes.from_names(set(words), words), tuple(val_wnids))


def parse_meta(data: bytes, name: Path) -> tuple[dict[int, str], dict[str, str]]:
    """meta.mat bytes -> (ILSVRC2012_ID -> WNID, WNID -> words) of the leaf synsets."""
    scipy_io = import_optional("scipy.io", "imagenet")
    try:
        synsets = scipy_io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets.ravel() if int(s["num_children"]) == 0]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
        words = {str(s["WNID"]): str(s["words"]) for s in leaves}
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{name}: not the devkit's synsets struct ({type(e).__name__}: {e}); "
                        "download the devkit again") from None
    if not leaves:
        raise DataError(f"{name}: no leaf synsets (num_children == 0); download the devkit again")
    return id_to_wnid, words


def read_synset_words(path: Path) -> dict[str, str]:
    """`<name> <words>` lines (Kaggle's LOC_synset_mapping.txt, Caffe's synset_words.txt) ->
    {name: words}; a `.py` file is read as Hugging Face's classes.py (`read_classes_py`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the class names file ({e})") from None
    if path.suffix == ".py":
        return read_classes_py(text, path)
    lines = text.splitlines()
    words = {}
    for number, line in enumerate(lines, 1):
        name, _, text = line.strip().partition(" ")
        if not name or name.startswith("#"):
            continue
        if name in words:
            raise DataError(f"{path}:{number}: class {name!r} is listed twice")
        words[name] = text.strip()
    if not words:
        raise DataError(f"{path}: no '<class> <words>' lines")
    return words


def read_classes_py(text: str, path: Path) -> dict[str, str]:
    """The WNID -> words literal of Hugging Face imagenet-1k's classes.py (`IMAGENET2012_CLASSES =
    OrderedDict({"n01440764": "tench, Tinca tinca", ...})`, or a list of pairs), read with `ast`:
    nothing in the file is run."""
    try:
        tree = ast.parse(text, str(path))
    except SyntaxError as e:
        raise DataError(f"{path}: not Python ({e.msg}, line {e.lineno})") from None
    for node in ast.walk(tree):
        pairs = (list(zip(node.keys, node.values)) if isinstance(node, ast.Dict) else
                 [tuple(e.elts) for e in node.elts if isinstance(e, ast.Tuple) and len(e.elts) == 2]
                 if isinstance(node, (ast.List, ast.Tuple)) else [])
        strings = [(k.value, v.value) for k, v in pairs if isinstance(k, ast.Constant)
                   and isinstance(v, ast.Constant) and isinstance(k.value, str)
                   and isinstance(v.value, str) and WNID.fullmatch(k.value)]
        if strings and len(strings) == len(pairs):
            return dict(strings)
    raise DataError(f"{path}: no {{'<wnid>': '<words>', ...}} literal (Hugging Face's classes.py "
                    "holds one); pass '<wnid> <words>' lines instead")


def val_number(name: str) -> int | None:
    """ILSVRC2012_val_00000042.JPEG -> 42; None for other names."""
    found = VAL_NAME.fullmatch(name.rsplit("/", 1)[-1].split(".", 1)[0])
    return int(found.group(1)) if found else None


def size_warnings(classes: Classes, found: dict[str, int]) -> list[str]:
    """Warnings when data that should be ImageNet-1k has other counts (partial or mixed data)."""
    expected = {"train": TRAIN_IMAGES, "val": VAL_IMAGES}
    notes = []
    if len(classes.names) != CLASSES:
        notes.append(f"this looks like ImageNet-1k but has {len(classes.names)} classes, "
                     f"not {CLASSES}")
    for split, count in found.items():
        if split in expected and count != expected[split]:
            notes.append(f"this looks like ImageNet-1k but its {split} split has {count:,} "
                         f"images, not {expected[split]:,}")
    return notes


def import_optional(module: str, extra: str):
    """Import an optional dependency or fail with the pip command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"this input needs {module.split('.')[0]}: "
                        f"pip install 'alexnet-dali[{extra}]'") from None
