"""`alexnet-dali verify`: every shard of OUT checked against manifest.json, its index and a decoder.

Per shard, every check runs even after one fails, so one run lists every problem: the tar's size
and sha256 as the manifest records them (the sha256 catches any changed byte); the `.idx` parses
and lists exactly the tar's members (extension, data offset, size, name); the sample count is the
manifest's. With `decode`, every sample also needs a `.cls` label within the class range and a
`.jpg` that libjpeg-turbo decodes without a single warning, which names the damaged samples. That
strictness is the point: DALI's decoder only *warns* on "Corrupt JPEG data" and trains on damaged
pixels. simplejpeg's `strict=True` turns libjpeg's warnings into errors; Pillow has no such switch
and decodes most such JPEGs without complaint."""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import BinaryIO

import simplejpeg
from tqdm import tqdm

from alexnet_dali.errors import DataError
from alexnet_dali.tools.manifest import Manifest, read_manifest
from alexnet_dali.tools.shards import (
    IndexEntry,
    decode_label,
    iter_samples,
    parse_index,
    sha256_file,
)
from alexnet_dali.tools.storage import LocalStore, Store


@dataclass(frozen=True)
class ShardCheck:
    """One shard to verify: where its files are and what manifest.json records about it."""

    store: Store
    tar: str  # relative to the store, as manifest.json lists it
    index: str | None
    samples: int
    sha256: str | None
    size: int | None  # None: a manifest written before sizes were recorded
    classes: int
    decode: bool


@dataclass(frozen=True)
class Problem:
    """Something wrong with a shard file, or with one sample (`key`) in it."""

    path: str
    reason: str
    key: str = ""

    def __str__(self) -> str:
        return f"{self.path}: " + (f"sample {self.key}: " if self.key else "") + self.reason


def file_problem(url: str, found: int | None, size: int | None) -> Problem | None:
    """The cheap check (no reading): the tar is there (`found` bytes) with the recorded size."""
    if found is None:
        return Problem(url, "missing (listed in manifest.json)")
    if size is not None and found != size:
        return Problem(url, f"{found} bytes, manifest.json says {size} "
                            "(cut short or changed, e.g. by an incomplete copy)")
    return None


def _index_problems(check: ShardCheck, tar_samples: list[dict[str, IndexEntry]]) -> list[Problem]:
    """The `.idx` must list exactly the members the tar holds."""
    if check.index is None:
        return []
    where = check.store.url(check.index)
    try:
        listed = parse_index(check.store.read_bytes(check.index), where)
    except FileNotFoundError:
        return [Problem(where, "missing (listed in manifest.json)")]
    except DataError as e:
        return [Problem(where, str(e).removeprefix(f"{where}: "))]
    if len(listed) != len(tar_samples):
        return [Problem(where, f"lists {len(listed)} samples, the tar holds {len(tar_samples)}")]
    for number, (mine, theirs) in enumerate(zip(listed, tar_samples), 2):
        if mine != theirs:
            name = next(iter(mine.values())).name
            return [Problem(where, f"line {number} ({name}) does not match the tar's member "
                                   "offsets, sizes or names")]
    return []


class HashingReader:
    """A binary stream that feeds every byte it hands out into a sha256 (one pass over a shard
    both hashes it and parses it, locally or over the network)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes, hashed."""
        data = self.raw.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> str:
        """Hash what is left (the tar's end blocks, or a damaged tail) and return the hex sha256."""
        while self.read(1 << 20):
            pass
        return self.digest.hexdigest()


def stored_sha256(store: Store, rel: str) -> str:
    """Hex sha256 of a file in a shard folder, streamed (a local file through
    hashlib.file_digest; an object in S3 as it arrives)."""
    if isinstance(store, LocalStore):
        return sha256_file(store.root / rel)
    with store.open(rel) as raw:
        return HashingReader(raw).drain()


def sample_problem(members: dict[str, bytes], classes: int) -> str | None:
    """Why one sample is unusable (strict JPEG decode, label in range), or None."""
    if "jpg" not in members or "cls" not in members:
        return f"has members {sorted(members)}, needs jpg and cls"
    try:
        label = decode_label(members["cls"])
    except ValueError:
        return f"label {members['cls'][:16]!r} is not an integer"
    if not 0 <= label < classes:
        return f"label {label} is outside 0..{classes - 1}"
    try:
        simplejpeg.decode_jpeg(members["jpg"], colorspace="RGB", strict=True)
    except ValueError as e:  # libjpeg's errors and, with strict=True, its warnings
        return f"JPEG does not decode cleanly ({e})"
    return None


def check_shard(check: ShardCheck) -> list[Problem]:
    """Every problem of one shard (worker task): one streaming pass hashes and parses the tar."""
    url = check.store.url(check.tar)
    found = file_problem(url, check.store.size(check.tar), check.size)
    if found is not None and found.reason.startswith("missing"):
        return [found]  # nothing more to read
    problems = [found] if found is not None else []
    tar_samples: list[dict[str, IndexEntry]] = []
    try:
        with check.store.open(check.tar) as raw:
            stream = HashingReader(raw)
            try:
                for key, entries, members in iter_samples(stream, read=check.decode):
                    tar_samples.append({e.ext: e for e in entries})
                    reason = sample_problem(members, check.classes) if check.decode else None
                    if reason:
                        problems.append(Problem(url, reason, key))
                readable = None
            except tarfile.TarError as e:
                readable = Problem(url, f"not a readable tar after {len(tar_samples)} samples "
                                        f"({e}): cut short or damaged")
            digest = stream.drain()
    except OSError as e:  # unreadable (permissions, I/O error): say so, check the other shards
        return problems + [Problem(url, f"cannot be read ({e.strerror or e})")]
    if check.sha256 is not None and digest != check.sha256:
        problems.append(Problem(url, "sha256 differs from manifest.json (the bytes changed "
                                     "since preprocess wrote them)"))
    if readable is not None:
        return problems + [readable]
    if len(tar_samples) != check.samples:
        problems.append(Problem(url, f"holds {len(tar_samples)} samples, manifest.json says "
                                     f"{check.samples}"))
    return problems + _index_problems(check, tar_samples)


def shard_checks(manifest: Manifest, decode: bool = False,
                 splits: tuple[str, ...] | None = None) -> list[ShardCheck]:
    """One ShardCheck per shard of `splits` (every split), in manifest order."""
    classes = len(manifest.classes)
    return [ShardCheck(manifest.store, shard.tar, shard.index, shard.samples, shard.sha256,
                       shard.size, classes, decode)
            for name, split in manifest.splits.items() if splits is None or name in splits
            for shard in split.shards]


def listing(manifest: Manifest, split: str) -> dict[str, int]:
    """rel -> bytes of every file in the folders that hold the split's shards (one listing per
    folder: on S3 a few requests instead of one per shard)."""
    folders = {s.tar.rpartition("/")[0] for s in manifest.split(split).shards}
    return {rel: size for folder in sorted(folders)
            for rel, size in manifest.store.sizes(folder).items()}


def first_file_problem(manifest: Manifest, split: str,
                       files: dict[str, int] | None = None) -> str | None:
    """The cheap check before training or evaluating: every shard present, sizes as recorded
    (`files`: the split's `listing`, if already made).

    Returns a message naming the first bad shard (and how many more), or None.
    """
    files = listing(manifest, split) if files is None else files
    problems = [found for shard in manifest.split(split).shards
                if (found := file_problem(manifest.url(shard.tar), files.get(shard.tar),
                                          shard.size)) is not None]
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more shards)" if len(problems) > 1 else ""
    return (f"{problems[0]}{more}; copy the shards again, and check them all with "
            f"`alexnet-dali verify {manifest.root}`")


def verify(out: str | Path | Store, decode: bool = False, workers: int = 1,
           progress: bool = True) -> tuple[list[ShardCheck], list[Problem]]:
    """Check every shard of OUT (in parallel, progress in bytes); (shards, problems sorted)."""
    checks = shard_checks(read_manifest(out), decode)
    sizes = [c.size if c.size is not None else c.store.size(c.tar) or 0 for c in checks]
    bar = tqdm(total=sum(sizes), unit="B", unit_scale=True, unit_divisor=1024,
               desc="verify" + (" + decode" if decode else ""), disable=not progress,
               dynamic_ncols=True)
    problems: list[Problem] = []
    pool = get_context("spawn").Pool(workers) if workers > 1 and len(checks) > 1 else None
    with bar:
        try:
            results = pool.imap(check_shard, checks) if pool else map(check_shard, checks)
            for size, found in zip(sizes, results):
                problems.extend(found)
                bar.update(size)
        finally:
            if pool is not None:
                pool.terminate()
    return checks, sorted(problems, key=lambda p: (p.path, p.key))


def summary(out: str | Path, checks: list[ShardCheck], problems: list[Problem]) -> str:
    """Every problem on its own line and what to do, or one line saying all is well."""
    what = "size, sha256, index, sample count" + (", strict decode" if checks and
                                                 checks[0].decode else "")
    if not problems:
        return f"{out}: all {len(checks)} shards are intact ({what})"
    bad = len({p.path.removesuffix(".idx").removesuffix(".tar") for p in problems})
    return "\n".join([*map(str, problems),
                      f"{bad} of {len(checks)} shards have problems ({len(problems)} found). "
                      "Copy them again from where they were made, or delete each bad shard's "
                      ".tar/.idx/.json and re-run `alexnet-dali preprocess` with the same "
                      "options: it rebuilds just those, byte for byte."])
