"""The official ILSVRC-2012 downloads, read in place: no extraction step.

`ILSVRC2012_img_train.tar` holds one tar per class (`n01440764.tar` of `n01440764_*.JPEG`): its
members are listed (headers only; the per-class tars in parallel) and every image is located by
its absolute byte offset in the big tar. `ILSVRC2012_img_val.tar` is flat
(`ILSVRC2012_val_00000001.JPEG`, ...); its member order is NOT name order, so each image is paired
with its label by the number in its name, through the devkit's ground truth, never by position.
Canonical names are `<wnid>/<file name>`, as in a tree extracted the torchvision way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from alexnet_dali.errors import DataError, ctrl_c_blocked_for_new_workers
from alexnet_dali.tools.imagenet import WNID, Classes, Devkit, val_number
from alexnet_dali.tools.scan import SplitScan
from alexnet_dali.tools.sources import TAR, Reject, SourceListBuilder
from alexnet_dali.tools.tarindex import TarListing, list_tar

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"


def parallel_map(func: Callable, args: list[tuple], workers: int) -> Iterator:
    """func(*a) for every a in args, in order, as each is done; in `workers` processes when
    workers > 1."""
    if workers <= 1 or len(args) <= 1:
        yield from (func(*a) for a in args)
        return
    with ProcessPoolExecutor(min(workers, len(args)), get_context("spawn")) as pool:
        with ctrl_c_blocked_for_new_workers():  # map submits every task, starting the workers
            results = pool.map(func, *zip(*args), chunksize=max(1, len(args) // (8 * workers)))
        yield from results


def class_tars(path: Path) -> tuple[list[tuple[str, int, int]], list[Reject]]:
    """(wnid, data offset, size) of every per-class tar in the train tar; other members rejected."""
    outer = list_tar(str(path))
    end = os.path.getsize(path)
    inner, rejects = [], list(outer.rejects)
    for name, offset, size in zip(outer.names, outer.offsets, outer.sizes):
        wnid = name.rsplit("/", 1)[-1].removesuffix(".tar")
        if offset + size > end:
            raise DataError(f"{path}: truncated ({name} ends at byte {offset + size:,}, the file "
                            f"has {end:,}); finish or repeat the download")
        if not name.endswith(".tar") or not WNID.fullmatch(wnid):
            rejects.append(Reject(name, "no-label", "not a per-class tar nXXXXXXXX.tar"))
        else:
            inner.append((wnid, offset, size))
    return inner, rejects


def train_wnids(path: Path) -> list[str]:
    """The WNIDs of the per-class tars (the class list when there is no devkit)."""
    return [wnid for wnid, _, _ in class_tars(path)[0]]


def scan_train_tar(path: Path, classes: Classes, workers: int,
                   progress: bool = False) -> SplitScan:
    """Every image of the train tar, `<wnid>/<file>`, located inside the big tar; a bar counts
    the per-class tars listed when `progress`."""
    inner, rejects = class_tars(path)
    ids = classes.ids()
    for wnid, _, _ in inner:
        if wnid not in ids:
            raise DataError(f"{path}: {wnid}.tar is not one of the {len(ids)} classes (the "
                            "devkit's leaf synsets); check that the tar and devkit belong together")
    listings: Iterator[TarListing] = parallel_map(
        list_tar, [(str(path), offset, size, f"{wnid}/") for wnid, offset, size in inner], workers)
    builder = SourceListBuilder()
    container = builder.add_container(TAR, str(path.absolute()))
    bar = tqdm(listings, total=len(inner), unit="class", desc=f"list {path.name}",
               disable=not progress, leave=False, dynamic_ncols=True)
    for (wnid, _, _), listing in zip(inner, bar):
        rejects.extend(listing.rejects)
        builder.extend(container, [f"{wnid}/{n.rsplit('/', 1)[-1]}" for n in listing.names],
                       ids[wnid], listing.offsets, listing.sizes)
    sources, duplicates = builder.build()
    return SplitScan(sources, tuple(rejects + duplicates))


def scan_val_tar(path: Path, classes: Classes, devkit: Devkit) -> SplitScan:
    """Every image of the flat val tar, labelled by the number in its name."""
    listing = list_tar(str(path))
    ids = classes.ids()
    builder = SourceListBuilder()
    container = builder.add_container(TAR, str(path.absolute()))
    rejects = list(listing.rejects)
    names, labels, offsets, sizes = [], [], [], []
    for name, offset, size in zip(listing.names, listing.offsets, listing.sizes):
        number = val_number(name)
        if number is None or not 1 <= number <= len(devkit.val_wnids):
            rejects.append(Reject(name, "no-label", "no ILSVRC2012_val_<number> in the "
                                  "devkit's ground truth"))
            continue
        wnid = devkit.val_wnids[number - 1]
        names.append(f"{wnid}/{name.rsplit('/', 1)[-1]}")
        labels.append(ids[wnid])
        offsets.append(offset)
        sizes.append(size)
    builder.extend(container, names, labels, offsets, sizes)
    sources, duplicates = builder.build()
    return SplitScan(sources, tuple(rejects + duplicates))
