"""A node-local write-ahead spool for the prediction logger: records a process has accepted
but not yet shipped survive that process being killed.

Every record the logger queues is also appended (one JSON line, an unbuffered ``write`` — the
kernel keeps it when the process dies, even by SIGKILL) to the current segment of this
process's spool, ``<dir>/<owner>.<n>.jsonl``. Once everything up to a record has been shipped
(the logger's *watermark*), the segments wholly below it are deleted, so the spool holds only
what is still in memory. Each owner holds an exclusive ``flock`` on ``<dir>/<owner>.lock`` for
its life; a logger that can take another owner's lock knows that owner is dead, re-queues
its segments' records (:meth:`LogSpool.claim_orphans`) and deletes them. The monitor
de-duplicates by request id, so a record shipped both before the kill and after the claim is
stored once::

    spool = LogSpool(tmp_dir)
    spool.append(1, "predictions", {"request_id": "r1", ...})
    spool.release(1)                         # shipped: its segment may go
    for kind, rec in spool.claim_orphans():  # what dead owners left behind
        ...

Not thread-safe: the logger calls it under its own lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LogSpool"]

logger = logging.getLogger(__name__)

_KINDS = {"predictions": "p", "feedback": "f"}
_NAMES = {v: k for k, v in _KINDS.items()}


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
        os.write(self._fd, line.encode() + b"\n")
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

    def claim_orphans(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(kind, record)`` of every segment whose owner is gone; each owner's files are
        deleted once its records were all yielded (a consumer that stops early leaves them,
        to be claimed again)."""
        uid = os.getuid()
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
                for path in segments:
                    yield from self._read(path)
                for path in segments:
                    path.unlink(missing_ok=True)
                lock.unlink(missing_ok=True)
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
