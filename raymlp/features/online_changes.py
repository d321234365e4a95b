"""The online store's change feed: what keeps the replicas' near-caches coherent.

Every online store actor (the feature store, or each online shard) numbers the changes to its
online tables — ``(seq, view, keys)``, ``keys`` None for "every key of the view" and ``view``
None for "everything" (new definitions, a rebuilt table) — and keeps the recent ones in a ring.
Near-caches (:mod:`raymlp._private.online_cache`) long-poll :meth:`ChangeLog.watch` for them.

Coherence is lease-based, so an acknowledged write is never hidden by a cache:

- each poll renews the subscriber's lease (``lease_s``, counted from when the actor got the
  poll; the cache counts from when it sent it, so its copy of the lease ends first);
- a write is acknowledged only after :meth:`ChangeLog.await_acks`: every subscriber holding a
  lease has polled with ``since >= seq`` (it applied the invalidation) or lost its lease;
- a cache uses its entries only while it holds a lease, and after a lost lease only once a poll
  brought it every change it missed (or a resync cleared it).

A dead or stalled subscriber costs a write at most ``lease_s``. A restarted actor has a new
``epoch``: subscribers of the old one resynchronise (clear) on their next poll, and its writes
wait ``lease_s`` after the restart (``grace=True``) so that leases granted by the old instance
have run out before any write of the new one is acknowledged.

Example::

    log = ChangeLog(lease_s=1.0)
    seq = log.record("customer_profile", ["c1"])
    log.await_acks(seq)                  # before acknowledging the write
    log.watch("replica-1", log.epoch, since=0, wait_s=0.2)   # -> {"changes": [...], ...}
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["ChangeLog", "MAX_KEYS_PER_CHANGE"]

#: A change touching more keys than this is sent as "every key of the view" (a materialisation
#: of a whole table would otherwise ship every key to every replica).
MAX_KEYS_PER_CHANGE = 4096


@dataclass
class _Subscriber:
    acked: int
    lease_until: float  # time.monotonic() of this process


class ChangeLog:
    """Numbered changes of one online store, with leased subscribers (thread-safe)."""

    def __init__(self, lease_s: float = 1.0, capacity: int = 10_000, grace: bool = False) -> None:
        self.epoch = uuid.uuid4().hex
        self._grace_until = time.monotonic() + lease_s if grace else 0.0
        self.lease_s = float(lease_s)
        self.seq = 0
        self._changes: deque[tuple[int, str | None, list[Any] | None]] = deque(maxlen=capacity)
        self._subs: dict[str, _Subscriber] = {}
        self._cond = threading.Condition()

    # -- writers ---------------------------------------------------------------------------

    def record(self, view: str | None, keys: list[Any] | None) -> int:
        """Number a change (call it after the new rows are readable); returns its seq."""
        if keys is not None and len(keys) > MAX_KEYS_PER_CHANGE:
            keys = None
        with self._cond:
            self.seq += 1
            self._changes.append((self.seq, view, None if keys is None else list(keys)))
            self._cond.notify_all()
            return self.seq

    def await_acks(self, seq: int) -> int:
        """Block until every leased subscriber applied change ``seq`` (or lost its lease);
        returns how many subscribers were waited for."""
        with self._cond:
            waited = 0
            while True:
                now = time.monotonic()
                if now < self._grace_until:
                    self._cond.wait(self._grace_until - now)
                    continue
                self._drop_expired(now)
                behind = [s for s in self._subs.values() if s.acked < seq]
                if not behind:
                    return waited
                waited = max(waited, len(behind))
                self._cond.wait(min(s.lease_until for s in behind) - now)

    # -- subscribers -----------------------------------------------------------------------

    def watch(self, sub_id: str, epoch: str | None, since: int, wait_s: float) -> dict[str, Any]:
        """A subscriber's long poll: renews its lease, records ``since`` as applied, and returns
        the changes after ``since`` (waiting up to ``wait_s`` for one).

        ``{"epoch", "seq", "lease_s", "changes": [(seq, view, keys)]}``, or ``"resync": True``
        (and no changes) when ``since`` is not of this epoch or older than the ring: the
        subscriber clears its copy and continues from ``seq``.
        """
        received = time.monotonic()
        with self._cond:
            current = epoch == self.epoch and since <= self.seq
            oldest = self._changes[0][0] if self._changes else self.seq + 1
            if current and since < oldest - 1:
                current = False
            # A subscriber of another epoch has applied nothing of this one: writers wait for
            # its next poll (after it cleared its copy), not just for this one.
            self._subs[sub_id] = _Subscriber(
                acked=since if epoch == self.epoch else -1, lease_until=received + self.lease_s
            )
            self._cond.notify_all()  # an ack can release a writer
            if not current:
                return {"epoch": self.epoch, "seq": self.seq, "lease_s": self.lease_s,
                        "resync": True, "changes": []}
            deadline = received + max(0.0, min(wait_s, self.lease_s / 2))
            while self.seq <= since:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            changes = [c for c in self._changes if c[0] > since] if self.seq > since else []
            return {"epoch": self.epoch, "seq": self.seq, "lease_s": self.lease_s,
                    "changes": changes}

    def forget(self, sub_id: str) -> None:
        """A subscriber going away (its writes no longer wait for it)."""
        with self._cond:
            self._subs.pop(sub_id, None)
            self._cond.notify_all()

    def subscribers(self) -> int:
        with self._cond:
            self._drop_expired(time.monotonic())
            return len(self._subs)

    def _drop_expired(self, now: float) -> None:
        for k in [k for k, s in self._subs.items() if s.lease_until <= now]:
            del self._subs[k]
