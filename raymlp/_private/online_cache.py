"""The ModelServer replica's near-cache of online rows: an entity it has read before needs no
actor call.

The cache follows the ``feature_store`` actor (definitions; the online rows when unsharded)
and each online shard. Entries are the online store's answers per ``(store, view, key)`` and
feature list — the
values, and the row's event time, so the cache expires a row by the view's TTL by itself (an
answer stays what the actor would give). Not-found answers are kept too. Memory is bounded by
``max_bytes`` (estimated sizes, least recently used first out).

Coherence follows the store's change feed (:mod:`raymlp.features.online_changes`): one daemon
thread per online store actor long-polls ``online_watch``, drops the entries each change
touches, and holds a lease; the cache answers only while the lease holds, and the store
acknowledges a write only after every leased cache applied it — so a request sent after a push
or materialisation was acknowledged sees the new rows, as from the actor. An answer read from
the actor is kept only if no later change of its view has been applied meanwhile (the read's
``change`` tag) and nothing was cleared since it was sent (``generation``). New definitions
clear everything. Views with sensitive join keys are never cached (the store keys them by
token).

Example::

    cache = NearCache([ActorClient("feature_store")], caller, max_bytes=64 << 20)
    cache.start()
    lookup = OnlineLookup(main, [], caller, cache=cache)
    lookup.get_online_features([{"customer_id": "c1"}], ["customer_profile:tenure_months"])
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

from raymlp._private.credentials import Caller
from raymlp._private.rpc import ActorClient
from raymlp.features.online import EXPIRED, NOT_FOUND

__all__ = ["NearCache"]

logger = logging.getLogger(__name__)

_ENTRY_OVERHEAD = 200  # bytes: the key tuple, the dict slot, the entry tuple


def _size(v: Any) -> int:
    if v is None or isinstance(v, bool):
        return 8
    if isinstance(v, (int, float)):
        return 32
    if isinstance(v, str):
        return 49 + len(v)
    if isinstance(v, tuple):
        return 56 + sum(_size(x) for x in v)
    return 64


class _Feed:
    """The change feed of one online store actor, as this cache has applied it."""

    __slots__ = ("actor", "epoch", "since", "lease_until", "view_seq", "all_seq", "thread")

    def __init__(self, actor: ActorClient) -> None:
        self.actor = actor
        self.epoch: str | None = None
        self.since = 0
        self.lease_until = 0.0  # time.monotonic(); 0: no lease
        self.view_seq: dict[str, int] = {}  # the latest applied change per view
        self.all_seq = 0  # the latest applied change of everything (or resync point)
        self.thread: threading.Thread | None = None


class NearCache:
    """Online answers of the ``stores`` (the feature store, or its shards in shard order).

    Args:
        stores: the online store actors.
        caller: the replica's service principal (credential of every poll).
        max_bytes: memory bound of the entries (estimated).
        poll_s: how long one long poll waits for a change (less than half the lease).
    """

    def __init__(
        self,
        stores: list[ActorClient],
        caller: Caller,
        *,
        max_bytes: int = 64 << 20,
        poll_s: float = 0.25,
    ) -> None:
        self.caller = caller
        self.max_bytes = int(max_bytes)
        self.poll_s = poll_s
        self.sub_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._feeds = [_Feed(a) for a in stores]
        self._lock = threading.Lock()
        # (store, view, key) -> {features: (event ts µs or None if not found, values, bytes)}
        self._entries: OrderedDict[tuple[int, str, Any], dict[tuple[str, ...], tuple]] = (
            OrderedDict()
        )
        self.bytes = 0
        #: Bumped by every clear of everything (new definitions, a resync): a read sent before
        #: it is not kept.
        self.generation = 0
        self._stop = threading.Event()
        self.hits = self.misses = self.evictions = self.invalidations = self.resyncs = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> NearCache:
        """Start the feed threads (they hold the cache weakly: it ends when dropped)."""
        ref = weakref.ref(self)
        for i, feed in enumerate(self._feeds):
            if feed.thread is None:
                feed.thread = threading.Thread(
                    target=_follow, args=(ref, i, self._stop), name=f"raymlp-nearcache-{i}",
                    daemon=True,
                )
                feed.thread.start()
        return self

    def close(self) -> None:
        """Stop following and tell the stores (writes stop waiting for this cache)."""
        self._stop.set()
        for feed in self._feeds:
            feed.lease_until = 0.0
            try:
                feed.actor.remote("online_unwatch", self.caller.wire(), self.sub_id)
            except Exception:  # the store may be gone already: its lease simply runs out
                pass

    def __del__(self) -> None:
        self._stop.set()

    # -- reads -----------------------------------------------------------------------------

    def leased(self, store: int) -> bool:
        """Whether entries of ``store`` may answer now."""
        feed = self._feeds[store]
        return feed.epoch is not None and time.monotonic() < feed.lease_until

    def lookup(
        self,
        view: str,
        features: tuple[str, ...],
        keys: list[Any],
        stores: list[int],
        ttl_us: int,
        now_us: int,
    ) -> tuple[np.ndarray, dict[str, list[Any]], list[int]]:
        """Answer a batch from the entries: ``(statuses, {feature: values}, missed positions)``
        (statuses and values at missed positions are to be filled from the store)."""
        n = len(keys)
        status = np.zeros(n, dtype=np.uint8)
        nulls = (None,) * len(features)
        rows: list[tuple] = [nulls] * n  # values per position; transposed once at the end
        missed: list[int] = []
        now = time.monotonic()
        leased = [f.epoch is not None and now < f.lease_until for f in self._feeds]
        horizon = now_us - ttl_us if ttl_us > 0 else None
        with self._lock:
            entries = self._entries
            touch = entries.move_to_end
            for i, key in enumerate(keys):
                store = stores[i]
                k = (store, view, key)
                group = entries.get(k) if leased[store] else None
                hit = group.get(features) if group is not None else None
                if hit is None:
                    missed.append(i)
                    continue
                touch(k)
                ts = hit[0]
                if ts is None:
                    status[i] = NOT_FOUND
                elif horizon is not None and ts <= horizon:
                    status[i] = EXPIRED
                else:
                    rows[i] = hit[1]
            self.hits += n - len(missed)
            self.misses += len(missed)
        cols = [list(c) for c in zip(*rows)] if n else [[] for _ in features]
        return status, dict(zip(features, cols)), missed

    # -- writes ----------------------------------------------------------------------------

    def put(
        self,
        store: int,
        view: str,
        features: tuple[str, ...],
        tag: tuple[str, int] | None,
        generation: int,
        rows: list[tuple[Any, int | None, tuple]],
    ) -> int:
        """Keep ``rows`` — ``(key, event ts or None, values)`` — read from ``store`` at ``tag``
        (the read's change-log position) when the cache was at ``generation``; returns how
        many were kept (none if a change of the view after ``tag`` was applied meanwhile)."""
        if tag is None:
            return 0
        with self._lock:
            feed = self._feeds[store]
            epoch, seq = tag
            if (
                generation != self.generation
                or epoch != feed.epoch
                or seq < feed.all_seq
                or seq < feed.view_seq.get(view, 0)
            ):
                return 0
            for key, ts, values in rows:
                k = (store, view, key)
                group = self._entries.get(k)
                if group is None:
                    group = self._entries[k] = {}
                else:
                    self._entries.move_to_end(k)
                    old = group.get(features)
                    if old is not None:
                        self.bytes -= old[2]
                nbytes = _ENTRY_OVERHEAD + _size(key) + _size(values) + 8 * len(features)
                group[features] = (ts, values, nbytes)
                self.bytes += nbytes
            while self.bytes > self.max_bytes and self._entries:
                _, group = self._entries.popitem(last=False)
                self.bytes -= sum(e[2] for e in group.values())
                self.evictions += 1
            return len(rows)

    def _drop_group(self, k: tuple) -> None:
        group = self._entries.pop(k, None)
        if group is not None:
            self.bytes -= sum(e[2] for e in group.values())
            self.invalidations += 1

    def _clear_all(self) -> None:
        self._entries.clear()
        self.bytes = 0
        self.generation += 1

    def apply(self, store: int, reply: dict[str, Any], sent_at: float) -> None:
        """Apply one ``online_watch`` reply (poll sent at monotonic ``sent_at``)."""
        with self._lock:
            feed = self._feeds[store]
            if reply.get("resync") or reply["epoch"] != feed.epoch:
                if feed.epoch is not None:  # a first contact has nothing of this store yet
                    self._clear_all()
                feed.epoch = reply["epoch"]
                feed.view_seq = {}
                feed.all_seq = reply["seq"]
                self.resyncs += 1
            for seq, view, keys in reply["changes"]:
                if view is None:  # new definitions: nothing cached may stay
                    self._clear_all()
                    feed.all_seq = seq
                elif keys is None:
                    for k in [k for k in self._entries if k[0] == store and k[1] == view]:
                        self._drop_group(k)
                    feed.view_seq[view] = seq
                else:
                    for key in keys:
                        self._drop_group((store, view, key))
                    feed.view_seq[view] = seq
            feed.since = reply["seq"]
            feed.lease_until = sent_at + float(reply["lease_s"])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self.bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "invalidations": self.invalidations,
                "resyncs": self.resyncs,
                "generation": self.generation,
                "leased": [self.leased(i) for i in range(len(self._feeds))],
            }


def _follow(ref: weakref.ref, store: int, stop: threading.Event) -> None:
    """One feed's thread: long-poll the store's changes, apply them, renew the lease."""
    backoff = 0.05
    while not stop.is_set():
        cache = ref()
        if cache is None:
            return
        feed = cache._feeds[store]
        actor, cred, sub_id = feed.actor, cache.caller.wire(), cache.sub_id
        epoch, since, poll_s = feed.epoch, feed.since, cache.poll_s
        del cache  # never hold the cache while blocked: it ends when its owner drops it
        sent_at = time.monotonic()
        try:
            reply = actor.call(
                "online_watch", cred, sub_id, epoch, since, poll_s, _timeout=poll_s + 10.0
            )
        except Exception as e:  # the store restarting or gone: the lease runs out
            if stop.is_set():
                return
            logger.debug("near-cache feed %d: %s", store, e)
            actor._handle = None  # a restarted actor is found again by name
            stop.wait(backoff)
            backoff = min(backoff * 2, 1.0)
            continue
        backoff = 0.05
        cache = ref()
        if cache is None:
            return
        cache.apply(store, reply, sent_at)
        del cache
