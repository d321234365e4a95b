"""The monitor's Delta tables under ``<root>/monitoring/``.

* ``prediction_log`` — one row per prediction record (schema: ``records.PREDICTION_SCHEMA``),
  partitioned by ``date``: the source of truth for windows after a restart, for joins with
  labels and for retraining data (``ray.data.read_delta(storage.uri("monitoring",
  "prediction_log"))``).
* ``feedback`` — one row per label (``records.FEEDBACK_SCHEMA``), partitioned by ``date``.
* ``events`` — the monitor's own state changes: alert transitions, canary decisions,
  runtime config and the metrics endpoint (``seq``, ``ts``, ``kind``, ``payload`` JSON);
  folded on restart.

Rows are logged exactly once per key: a client that retries a batch after a timeout may send
records that were already committed, and :class:`RecentKeys` (a bounded window of the keys of
recent rows, rebuilt from the logs on restart) lets the committer drop them.

Appends are batched by the caller (one commit per group of records); every ``compact_every``
commits a table is compacted and checkpointed so replay reads few files. The table handling is
the shared :class:`raymlp._private.delta.AppendOnlyTable` (also the registry's event log)::

    log = DeltaLog(storage, "prediction_log", PREDICTION_SCHEMA)
    log.append(predictions_to_table(records))
    recent = log.read(start_ts=time.time() - 3600)
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from raymlp._private.delta import (
    KIND_FIELD,
    PAYLOAD_FIELD,
    SEQ_FIELD,
    TS_FIELD,
    AppendOnlyTable,
    ts_from_arrow,
    ts_to_arrow,
)
from raymlp.errors import StorageError
from raymlp.storage import Storage

__all__ = ["DeltaLog", "EventTable", "GroupCommitter", "RecentKeys", "EVENT_SCHEMA"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

EVENT_SCHEMA = pa.schema([SEQ_FIELD, TS_FIELD, KIND_FIELD, PAYLOAD_FIELD])


def _ts_scalar(ts: float) -> pa.Scalar:
    return pa.scalar(round(ts * 1_000_000), pa.int64()).cast(pa.timestamp("us", tz="UTC"))


class DeltaLog:
    """An append-only Delta table under ``monitoring/<name>``.

    Args:
        storage: the platform storage root.
        name: table name under ``monitoring/``.
        schema: the Arrow schema of its rows.
        partition_by: partition columns (``date`` for the logs).
        compact_every: commits between compaction + checkpoint.
    """

    def __init__(
        self,
        storage: Storage,
        name: str,
        schema: pa.Schema,
        partition_by: list[str] | None = None,
        compact_every: int = 200,
    ) -> None:
        self.storage = storage
        self.name = name
        self.uri = storage.uri("monitoring", name)
        self.schema = schema
        self.partition_by = partition_by
        self.options = storage.delta_storage_options()
        self.compact_every = compact_every
        self.commits_since_compact = 0
        self._table = AppendOnlyTable(
            self.uri, self.options, create_name=f"raymlp_{name}", partition_by=partition_by
        )
        self._lock = threading.Lock()

    def _open(self) -> DeltaTable | None:
        return self._table.open()

    def append(self, table: pa.Table) -> int:
        """Commit ``table`` (one Delta transaction); returns the new table version."""
        if table.num_rows == 0:
            return self.version() or 0
        with self._lock:
            version = self._table.append(table)
            self.commits_since_compact += 1
            if self.commits_since_compact >= self.compact_every:
                self._compact_locked()
            return version

    def _compact_locked(self) -> None:
        try:
            self._table.compact(cleanup_metadata=True)
        except StorageError as e:  # compaction is an optimisation: log and go on
            logger.warning("compaction of %s failed: %s", self.uri, e)
        self.commits_since_compact = 0

    def compact(self) -> None:
        with self._lock:
            self._compact_locked()

    def version(self) -> int | None:
        dt = self._open()
        return None if dt is None else dt.version()

    def read(
        self,
        start_ts: float | None = None,
        end_ts: float | None = None,
        columns: list[str] | None = None,
        model: str | None = None,
    ) -> pa.Table:
        """Rows with ``start_ts <= ts < end_ts`` (and of ``model``), from a fresh snapshot."""
        dt = self._table.snapshot()
        if dt is None:
            return self.schema.empty_table()
        expr = None
        names = self.schema.names
        if start_ts is not None:
            expr = pc.field("ts") >= _ts_scalar(start_ts)
            if "date" in names:  # partition pruning
                day = (datetime.fromtimestamp(start_ts, UTC) - timedelta(days=1)).strftime(
                    "%Y-%m-%d"
                )
                expr = expr & (pc.field("date") >= day)
        if end_ts is not None:
            e2 = pc.field("ts") < _ts_scalar(end_ts)
            expr = e2 if expr is None else expr & e2
        if model is not None and "model" in names:
            e3 = pc.field("model") == model
            expr = e3 if expr is None else expr & e3
        table = self._table.read(dt, columns=columns, filters=expr)
        return table.sort_by("ts") if table.num_rows and "ts" in table.column_names else table


class EventTable:
    """The monitor's event log (alert transitions, canary runs, runtime config)."""

    def __init__(self, storage: Storage, compact_every: int = 200) -> None:
        self.log = DeltaLog(storage, "events", EVENT_SCHEMA, compact_every=compact_every)
        self._seq: int | None = None
        self._lock = threading.Lock()

    def _next_seq(self) -> int:
        if self._seq is None:
            t = self.log.read(columns=["seq"])
            self._seq = int(pc.max(t["seq"]).as_py()) if t.num_rows else 0
        self._seq += 1
        return self._seq

    def append(self, events: list[tuple[str, float, dict[str, Any]]]) -> None:
        """Commit ``(kind, ts, payload)`` events in one transaction."""
        if not events:
            return
        with self._lock:
            seqs = [self._next_seq() for _ in events]
            table = pa.table(
                {
                    "seq": pa.array(seqs, pa.int64()),
                    "ts": ts_to_arrow([ts for _, ts, _ in events]),
                    "kind": [k for k, _, _ in events],
                    "payload": [json.dumps(p, default=str) for _, _, p in events],
                },
                schema=EVENT_SCHEMA,
            )
            try:
                self.log.append(table)
            except Exception:
                self._seq = None  # re-read the true high-water mark next time
                raise

    def read(self, kinds: list[str] | None = None) -> list[dict[str, Any]]:
        """Every event (oldest first): ``{"seq", "ts", "kind", "payload"}``."""
        t = self.log.read()
        if t.num_rows == 0:
            return []
        t = t.sort_by("seq")
        ts = ts_from_arrow(t["ts"])
        out = []
        for seq, when, kind, payload in zip(
            t["seq"].to_pylist(), ts, t["kind"].to_pylist(), t["payload"].to_pylist()
        ):
            if kinds is None or kind in kinds:
                out.append({"seq": seq, "ts": when, "kind": kind, "payload": json.loads(payload)})
        return out


class RecentKeys:
    """The keys of the most recent ``capacity`` rows of a log, oldest evicted first.

    What makes a log's appends idempotent for a client that retries: a key seen here was
    committed, so a record carrying it again is a duplicate. Memory is bounded by
    ``capacity``; a duplicate older than the window is not recognised (the window is sized to
    cover far more than a client's retry horizon). Not thread-safe: the committer that uses it
    runs one commit at a time (:class:`GroupCommitter`)::

        seen = RecentKeys(200_000)
        fresh, duplicates = seen.split(batch, key)   # also drops repeats within the batch
        log.append(to_table(fresh))
        seen.add(key(r) for r in fresh)              # only once they are durable
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def add(self, keys: Iterable[Hashable]) -> None:
        """Remember ``keys`` as the newest (a key already known moves to the newest end)."""
        for k in keys:
            self._keys[k] = None
            self._keys.move_to_end(k)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def split(
        self, items: Iterable[T], key: Callable[[T], Hashable]
    ) -> tuple[list[T], list[T]]:
        """``(fresh, duplicates)``: the items whose key is neither known nor repeated earlier
        in ``items``, and the others. Remembers nothing (call :meth:`add` once the fresh items
        are durable, so a failed commit leaves them retryable)."""
        fresh: list[T] = []
        dups: list[T] = []
        batch: set[Hashable] = set()
        for it in items:
            k = key(it)
            if k in self._keys or k in batch:
                dups.append(it)
            else:
                batch.add(k)
                fresh.append(it)
        return fresh, dups


class _Ticket:
    __slots__ = ("items", "done", "error")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.done = False
        self.error: BaseException | None = None


class GroupCommitter:
    """Concurrent callers share commits: the first caller in becomes the leader and commits
    everything queued meanwhile in one go; the others wait for that commit. Each caller
    returns only once its own items are durable (or raises the commit's error)::

        gc = GroupCommitter(lambda items: log.append(to_table(items)))
        gc.submit(records)      # from many threads at once: few, larger commits
    """

    def __init__(self, commit: Any) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._busy = False
        self.commits = 0

    def submit(self, items: list[Any]) -> None:
        ticket = _Ticket(items)
        with self._cond:
            self._queue.append(ticket)
            while not ticket.done and self._busy:
                self._cond.wait()
            if ticket.done:
                if ticket.error is not None:
                    raise ticket.error
                return
            self._busy = True
            batch, self._queue = self._queue, []
        error: BaseException | None = None
        try:
            self._commit([x for t in batch for x in t.items])
            self.commits += 1
        except BaseException as e:  # noqa: BLE001 - handed to every caller of the batch
            error = e
        with self._cond:
            for t in batch:
                t.done = True
                t.error = error
            self._busy = False
            self._cond.notify_all()
        if error is not None:
            raise error
