"""Damaged shards are never silent: each rank checks the bytes of every shard it reads, off the
training thread, and no sample of an unchecked shard reaches a step.

A JPEG damaged inside a shard (bytes overwritten, header and tar intact) only makes libjpeg warn;
DALI's decoder trains on the damaged pixels. So a `ShardWatcher` thread per loader hashes this
rank's shard files in the order its reader reads them (streamed with hashlib, which releases the
GIL, as does the file read) and compares each with the sha256 manifest.json records. On a
mismatch it decodes that shard's samples strictly (`tools.verify.check_shard`, what `verify
--decode` runs) to name the damaged ones. The loader's `SampleGate` reads each batch's sample
names from DALI (`source_info`: "tar:offset:member"), waits for its shards' verdicts (normally
long known: hashing is far faster than decoding) and holds damaged samples back from the step:
their label becomes HELD_BACK (torch's ignore_index) or, in evaluation, their `valid` bit False.
Once every shard of the rank has a clean verdict the gate costs one attribute read per batch.

"First read": a training rank reads DALI reader shard r in epoch 1, r + 1 in epoch 2, ... (one
range of samples each); the watcher hashes the files of the current range first and starts on the
next range only when a batch asks for one of its files, so each epoch's hashing is that epoch's
share. An evaluating rank reads its one range.

Then the run stops (`loader.shard_check = "stop"`, the default) at the next sync point, every rank
together, naming the shard, the sample key and `alexnet-dali verify --decode`; with "skip"
(`--skip-bad-samples`) it goes on without them and counts them. A shard whose bytes changed but
whose samples all decode cleanly (a changed label, a flipped bit DCT data hides) cannot be pinned
to a sample: that stops the run in both modes. DALI itself cannot drop a sample from a batch
without a Python callback in the graph, which would slow every step: hence the held-back labels.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from alexnet_dali.tools.manifest import Manifest, read_manifest
from alexnet_dali.tools.verify import ShardCheck, check_shard, shard_checks, stored_sha256

HELD_BACK = -100  # the label of a held-back sample: F.cross_entropy's default ignore_index
CHECK_MODES = ("stop", "skip", "off")


@dataclass(frozen=True)
class Verdict:
    """What the watcher found in one shard: damaged samples (key -> reason) or a fatal reason."""

    bad: dict[str, str] = field(default_factory=dict)
    fatal: str = ""  # the bytes changed but no sample can be named, or the file cannot be read

    @property
    def ok(self) -> bool:
        """True if nothing is wrong with the shard."""
        return not self.bad and not self.fatal


CLEAN = Verdict()


def judge(check: ShardCheck) -> Verdict:
    """Hash one shard; on a sha256 mismatch decode it strictly to name the damaged samples."""
    if check.sha256 is None:
        return CLEAN  # nothing to compare with (counted by the watcher as unchecked)
    try:
        if stored_sha256(check.store, check.tar) == check.sha256:
            return CLEAN
    except OSError as e:
        return Verdict(fatal=f"cannot be read ({e.strerror or e})")
    problems = check_shard(check)
    bad = {p.key: p.reason for p in problems if p.key}
    if bad:
        return Verdict(bad=bad)
    return Verdict(fatal="its sha256 differs from manifest.json, but every sample decodes "
                         "cleanly, so the changed samples cannot be named")


def reading_ranges(samples: Sequence[int], rank: int, world_size: int,
                   training: bool) -> list[list[int]]:
    """Indices of the shard files that rank `rank` reads, one list per DALI reader shard in the
    order it reads them: its own (r), then r + 1, ... when training (the reader moves on every
    epoch); only its own when evaluating. Reader shard s holds samples [s·N/W, (s+1)·N/W)."""
    total = sum(samples)
    starts = [sum(samples[:i]) for i in range(len(samples))]
    ranges = []
    for step in range(world_size if training else 1):
        s = (rank + step) % world_size
        begin, end = s * total // world_size, (s + 1) * total // world_size
        ranges.append([i for i, (a, n) in enumerate(zip(starts, samples))
                       if a < end and a + n > begin])
    return ranges


class ShardWatcher:
    """A daemon thread that judges shards in reading order, one range of files at a time."""

    def __init__(self, checks: Sequence[ShardCheck], ranges: list[list[int]]) -> None:
        self._order: list[ShardCheck] = []
        self._range_end: list[int] = []  # per file of _order: where its range ends in _order
        seen: set[int] = set()
        for files in ranges:
            new = [i for i in files if i not in seen]
            seen.update(new)
            self._order += [checks[i] for i in new]
            self._range_end += [len(self._order)] * len(new)
        # keyed as DALI names the files in source_info: the path, or the s3:// URL
        self._index = {c.store.url(c.tar): i for i, c in enumerate(self._order)}
        self._horizon = self._range_end[0] if self._order else 0
        self.verdicts: dict[str, Verdict] = {}
        self.cpu_seconds = 0.0  # this thread's CPU time judging shards (bench pipeline prints it)
        self.unchecked = sum(c.sha256 is None for c in self._order)
        self.files = len(self._order)
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="shard-watcher", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        """True when every file has its verdict."""
        return len(self.verdicts) == len(self._order)

    def _run(self) -> None:
        for i, check in enumerate(self._order):
            with self._cond:
                while i >= self._horizon and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            start = time.thread_time()
            try:
                verdict = judge(check)
            except Exception as e:  # noqa: BLE001 - a verdict must come, or a batch waits forever
                verdict = Verdict(fatal=f"could not be checked ({type(e).__name__}: {e})")
            with self._cond:
                self.cpu_seconds += time.thread_time() - start
                self.verdicts[check.store.url(check.tar)] = verdict
                self._cond.notify_all()

    def verdict(self, tar: str) -> Verdict:
        """The verdict on `tar`, waiting for it (and letting the thread on to its range)."""
        with self._cond:
            if tar not in self.verdicts:
                if tar not in self._index:
                    return Verdict(fatal="is not a shard of this split in manifest.json")
                self._horizon = max(self._horizon, self._range_end[self._index[tar]])
                self._cond.notify_all()
                while tar not in self.verdicts:
                    self._cond.wait()
            return self.verdicts[tar]

    def wait_all(self) -> None:
        """Let the thread judge every file, and wait until it has (benchmarks, tests)."""
        with self._cond:
            self._horizon = len(self._order)
            self._cond.notify_all()
            while not self.finished:
                self._cond.wait()

    def close(self) -> None:
        """Stop after the file being hashed (the thread is a daemon: exiting needs no close)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def sample_of(source_info: str) -> tuple[str, str]:
    """DALI's "tar:offset:member" -> (tar, sample key): the member name up to its first dot."""
    tar, _, member = source_info.rsplit(":", 2)
    return tar, member.partition(".")[0]


class SampleGate:
    """Per batch: which samples to hold back (from the watcher's verdicts), and what was met."""

    def __init__(self, watcher: ShardWatcher, skip: bool) -> None:
        self.watcher, self.skip = watcher, skip
        self.masked = 0  # samples held back since the last `take_masked`
        self.damaged: dict[tuple[str, str], str] = {}  # (tar, key) -> reason: every one met
        self.fatal: dict[str, str] = {}  # tar -> reason: changed shards no sample can be named
        self._all_clean = False

    def held_back(self, digits: Any, count: int | None = None) -> list[int]:
        """Positions among the first `count` (all) samples of a DALI batch to hold back."""
        watcher = self.watcher
        if self._all_clean:
            return []
        if watcher.finished and all(v.ok for v in watcher.verdicts.values()):
            self._all_clean = True  # from now on an attribute read per batch
            return []
        positions = []
        for i in range(len(digits) if count is None else count):
            tar, key = sample_of(digits[i].source_info())
            verdict = watcher.verdict(tar)
            if verdict.ok:
                continue
            if verdict.fatal:
                self.fatal[tar] = verdict.fatal
            elif key in verdict.bad:
                self.damaged[(tar, key)] = verdict.bad[key]
            else:
                continue
            positions.append(i)
        self.masked += len(positions)
        return positions

    @property
    def must_stop(self) -> bool:
        """A changed shard with no sample to name; or, unless skipping, any damaged sample."""
        return bool(self.fatal) or (bool(self.damaged) and not self.skip)

    def take_masked(self) -> int:
        """The samples held back since the last call."""
        masked, self.masked = self.masked, 0
        return masked

    def problems(self) -> list[str]:
        """One line per shard or sample met: `tar: sample KEY: reason`."""
        return ([f"{tar}: {reason}" for tar, reason in self.fatal.items()]
                + [f"{tar}: sample {key}: {reason}" for (tar, key), reason in self.damaged.items()])


def build_gate(data: str | Path | Manifest, split: str, rank: int, world_size: int,
               training: bool, mode: str) -> SampleGate | None:
    """The gate of one rank's loader of `split` (`mode` is loader.shard_check); None for "off".
    `data`: the shard folder's manifest, or where it is."""
    if mode == "off":
        return None
    manifest = data if isinstance(data, Manifest) else read_manifest(data)
    checks = shard_checks(manifest, decode=True, splits=(split,))
    ranges = reading_ranges([c.samples for c in checks], rank, world_size, training)
    return SampleGate(ShardWatcher(checks, ranges), skip=mode == "skip")


def unchecked_note(gate: SampleGate | None, data: str) -> str:
    """A note when manifest.json records no sha256 for some shards (nothing to compare)."""
    if gate is None or not gate.watcher.unchecked:
        return ""
    return (f"note: {data}/manifest.json records no sha256 for {gate.watcher.unchecked} of "
            f"{gate.watcher.files} shards read here, so damage inside them goes unnoticed; "
            f"`alexnet-dali verify --decode {data}` checks them")
