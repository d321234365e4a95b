"""A node-local write-ahead spool for the prediction logger: records a process has accepted
but not yet shipped survive that process being killed.

Every record the logger queues is also appended (one JSON line, an unbuffered ``write`` — the
kernel keeps it when the process dies, even by SIGKILL) to the current segment of this
process's spool, ``<dir>/<owner>.<n>.jsonl``. Once everything up to a record has been shipped
(the logger's *watermark*), the segments wholly below it are deleted, so the spool holds what
is still in memory plus the shipped head of the open segment (under ``segment_records``
records). Each owner holds an exclusive ``flock`` on ``<dir>/<owner>.lock`` for
its life; a logger that can take another owner's lock knows that owner is dead, re-queues
its segments' records (:meth:`LogSpool.claim_orphans`) and deletes them. The monitor
de-duplicates by request id, so a record shipped both before the kill and after the claim
(the shipped head of a segment, a record re-queued twice) is stored once::

    spool = LogSpool(tmp_dir)
    spool.append(1, "predictions", {"request_id": "r1", ...})
    spool.release(1)                         # shipped: its segment may go
    for orphan in spool.claim_orphans():     # what dead owners left behind
        requeue(orphan.records)
        orphan.done()                        # now safe elsewhere: delete its files

Not thread-safe: the logger calls ``append``/``release``/``close`` under its own lock;
``claim_orphans`` touches only other owners' files, so the logger reads them outside it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LogSpool", "Orphan"]

logger = logging.getLogger(__name__)

_KINDS = {"predictions": "p", "feedback": "f"}
_NAMES = {v: k for k, v in _KINDS.items()}


@dataclass
class Orphan:
    """A dead owner's records, claimed (its lock held) until the consumer is done with them."""

    owner: str
    records: list[tuple[str, dict[str, Any]]]
    segments: list[Path]
    lock: Path

    def done(self) -> None:
        """Its records are safe elsewhere (re-queued and re-spooled): delete its files."""
        for path in self.segments:
            path.unlink(missing_ok=True)
        self.lock.unlink(missing_ok=True)


class LogSpool:
    """One owner's spool in ``directory`` (see the module docstring).

    Args:
        directory: node-local; created ``0o700``. Only files owned by this user are claimed.
        owner: this owner's id (unique per process; a random one by default).
        segment_records: records per segment before a new one is started.
    """

    def __init__(self, directory: str | Path, owner: str | None = None,
                 segment_records: int = 2000) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.owner = owner or os.urandom(8).hex()
        self.segment_records = segment_records
        # Lock first under a temporary name, then rename: a scanner never sees an unlocked
        # ``.lock`` of a live owner.
        tmp = self.dir / f".{self.owner}.lock.tmp"
        self._lock_fd = os.open(tmp, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(tmp, self.dir / f"{self.owner}.lock")
        self._n = 0
        self._fd: int | None = None
        self._count = 0
        self._max_seq = 0
        # closed segments: (path, highest seq in it)
        self._closed: list[tuple[Path, int]] = []
        self.written = 0
        self.claimed = 0

    # -- this owner -------------------------------------------------------------------------------

    def _segment(self, n: int) -> Path:
        return self.dir / f"{self.owner}.{n:08d}.jsonl"

    def append(self, seq: int, kind: str, record: dict[str, Any]) -> None:
        """Write one record (raises OSError when the disk refuses: the caller stops spooling)."""
        if self._fd is None:
            self._n += 1
            self._fd = os.open(self._segment(self._n),
                               os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
            self._count = 0
        line = json.dumps({"k": _KINDS[kind], "r": record}, separators=(",", ":"),
                          default=str)
        data = line.encode() + b"\n"
        if os.write(self._fd, data) != len(data):
            # a full disk: the fragment stays the segment's last (torn) line, skipped on claim
            raise OSError(f"short write to {self._segment(self._n).name}")
        self._count += 1
        self._max_seq = seq
        self.written += 1
        if self._count >= self.segment_records:
            self._close_current()

    def _close_current(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._closed.append((self._segment(self._n), self._max_seq))
            self._fd = None

    def release(self, watermark: int) -> None:
        """Every record with ``seq <= watermark`` was shipped (or counted as dropped): delete
        the segments that hold nothing newer."""
        if self._fd is not None and self._max_seq <= watermark:
            self._close_current()
        keep = []
        for path, top in self._closed:
            if top <= watermark:
                path.unlink(missing_ok=True)
            else:
                keep.append((path, top))
        self._closed = keep

    def files(self) -> list[Path]:
        """This owner's segments on disk (tests, stats)."""
        return sorted(self.dir.glob(f"{self.owner}.*.jsonl"))

    def close(self, *, keep: bool = False) -> None:
        """Stop spooling; ``keep``: leave the segments (not all shipped) for another owner to
        claim, else delete them. The lock is released either way."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not keep:
            for path in self.files():
                path.unlink(missing_ok=True)
            (self.dir / f"{self.owner}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)  # releases the flock: the segments are now claimable

    # -- dead owners ------------------------------------------------------------------------------

    def claim_orphans(self) -> Iterator[Orphan]:
        """Each owner that is gone, as an :class:`Orphan` holding its records and its lock
        while the consumer handles it: ``orphan.done()`` once its records are safe elsewhere
        deletes its files; an orphan left without ``done()`` keeps them, to be claimed again."""
        uid = os.getuid()
        self._sweep_stale_tmp_locks()
        for lock in sorted(self.dir.glob("*.lock")):
            owner = lock.name[: -len(".lock")]
            if owner == self.owner:
                continue
            try:
                if lock.stat().st_uid != uid:
                    continue  # never read another user's files
                fd = os.open(lock, os.O_RDWR)
            except OSError:
                continue  # claimed (and deleted) by another logger meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its owner is alive
                segments = sorted(self.dir.glob(f"{owner}.*.jsonl"))
                records = [r for path in segments for r in self._read(path)]
                yield Orphan(owner, records, segments, lock)
            finally:
                os.close(fd)  # unlocks: what done() did not delete is claimable again

    def _sweep_stale_tmp_locks(self, older_than_s: float = 60.0) -> None:
        """Delete ``.<owner>.lock.tmp`` files of owners killed between creating and renaming
        their lock (no segment exists for them yet)."""
        now = time.time()
        for tmp in self.dir.glob(".*.lock.tmp"):
            try:
                if tmp.stat().st_uid != os.getuid() or now - tmp.stat().st_mtime < older_than_s:
                    continue
                fd = os.open(tmp, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # its owner is alive (about to rename it)
            finally:
                os.close(fd)

    def _read(self, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            if path.stat().st_uid != os.getuid():
                return
            data = path.read_bytes()
        except OSError:
            return
        for line in data.splitlines():
            try:
                item = json.loads(line)
                kind, rec = _NAMES[item["k"]], item["r"]
            except (ValueError, KeyError, TypeError):
                # the owner died mid-write: only the last line can be torn
                logger.warning("%s: skipped a torn spool line", path.name)
                continue
            self.claimed += 1
            yield kind, rec
