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

import tarfile
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import simplejpeg
from tqdm import tqdm

from alexnet_dali.errors import DataError
from alexnet_dali.tools.manifest import Manifest, read_manifest
from alexnet_dali.tools.shards import (
    IndexEntry,
    decode_label,
    iter_samples,
    read_index,
    sha256_file,
)


@dataclass(frozen=True)
class ShardCheck:
    """One shard to verify: its files and what manifest.json records about it."""

    tar: Path
    index: Path | None
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


def file_problem(tar: Path, size: int | None) -> Problem | None:
    """The cheap check (no reading): the tar exists and has the recorded size (if recorded)."""
    if not tar.is_file():
        return Problem(str(tar), "missing (listed in manifest.json)")
    found = tar.stat().st_size
    if size is not None and found != size:
        return Problem(str(tar), f"{found} bytes, manifest.json says {size} "
                                 "(cut short or changed, e.g. by an incomplete copy)")
    return None


def _index_problems(check: ShardCheck, tar_samples: list[dict[str, IndexEntry]]) -> list[Problem]:
    """The `.idx` must list exactly the members the tar holds."""
    if check.index is None:
        return []
    try:
        listed = read_index(check.index)
    except FileNotFoundError:
        return [Problem(str(check.index), "missing (listed in manifest.json)")]
    except DataError as e:
        return [Problem(str(check.index), str(e).removeprefix(f"{check.index}: "))]
    if len(listed) != len(tar_samples):
        return [Problem(str(check.index), f"lists {len(listed)} samples, the tar holds "
                                          f"{len(tar_samples)}")]
    for number, (mine, theirs) in enumerate(zip(listed, tar_samples), 2):
        if mine != theirs:
            name = next(iter(mine.values())).name
            return [Problem(str(check.index), f"line {number} ({name}) does not match the "
                                              "tar's member offsets, sizes or names")]
    return []


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
    """Every problem of one shard (worker task)."""
    found = file_problem(check.tar, check.size)
    if found is not None and not check.tar.is_file():
        return [found]  # nothing more to read
    problems = [found] if found is not None else []
    try:
        digest = sha256_file(check.tar)
    except OSError as e:  # unreadable (permissions, I/O error): say so, check the other shards
        return problems + [Problem(str(check.tar), f"cannot be read ({e.strerror})")]
    if check.sha256 is not None and digest != check.sha256:
        problems.append(Problem(str(check.tar), "sha256 differs from manifest.json (the bytes "
                                                "changed since preprocess wrote them)"))
    tar_samples = []
    try:
        for key, entries, members in iter_samples(check.tar, read=check.decode):
            tar_samples.append({e.ext: e for e in entries})
            reason = sample_problem(members, check.classes) if check.decode else None
            if reason:
                problems.append(Problem(str(check.tar), reason, key))
    except (tarfile.TarError, OSError) as e:
        problems.append(Problem(str(check.tar), f"not a readable tar after {len(tar_samples)} "
                                                f"samples ({e}): cut short or damaged"))
        return problems
    if len(tar_samples) != check.samples:
        problems.append(Problem(str(check.tar), f"holds {len(tar_samples)} samples, "
                                                f"manifest.json says {check.samples}"))
    return problems + _index_problems(check, tar_samples)


def shard_checks(manifest: Manifest, decode: bool = False) -> list[ShardCheck]:
    """One ShardCheck per shard of every split in the manifest, in manifest order."""
    root, classes = manifest.root, len(manifest.classes)
    return [ShardCheck(root / shard.tar, root / shard.index if shard.index else None,
                       shard.samples, shard.sha256, shard.size, classes, decode)
            for split in manifest.splits.values() for shard in split.shards]


def first_file_problem(manifest: Manifest, split: str) -> str | None:
    """The cheap check before training or evaluating: every shard present, sizes as recorded.

    Returns a message naming the first bad shard (and how many more), or None.
    """
    problems = [found for shard in manifest.split(split).shards
                if (found := file_problem(manifest.root / shard.tar, shard.size)) is not None]
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more shards)" if len(problems) > 1 else ""
    return (f"{problems[0]}{more}; copy the shards again, and check them all with "
            f"`alexnet-dali verify {manifest.root}`")


def verify(out: str | Path, decode: bool = False, workers: int = 1,
           progress: bool = True) -> tuple[list[ShardCheck], list[Problem]]:
    """Check every shard of OUT (in parallel, progress in bytes); (shards, problems sorted)."""
    out = Path(out)
    checks = shard_checks(read_manifest(out), decode)
    sizes = [c.size if c.size is not None else _size_or_zero(c.tar) for c in checks]
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


def _size_or_zero(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


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
