"""The registry's event log: one Delta table under ``<root>/registry/events``.

Columns: ``seq`` (int64, strictly increasing), ``ts`` (UTC timestamp), ``principal``, ``tenant``,
``kind``, ``entity``, ``payload`` (JSON: the change, with before/after) and ``op_id`` (the
caller's idempotency key). It is the audit log and the recovery log: a registry replays it on
start. One call's events are one Delta commit (all or nothing). Every ``compact_every`` commits
the small files are compacted and a checkpoint is written, so a replay reads a few files instead
of thousands. The table handling is the shared :class:`raymlp._private.delta.AppendOnlyTable`::

    log = EventLog(storage)
    log.append([ev1, ev2])          # one atomic, durable commit
    events = log.read_all()         # in seq order
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from raymlp._private.delta import (
    KIND_FIELD,
    NO_TABLE,
    PAYLOAD_FIELD,
    SEQ_FIELD,
    TS_FIELD,
    AppendOnlyTable,
    TableAdvancedError,
    ts_from_arrow,
    ts_to_arrow,
)
from raymlp.registry.events import Event
from raymlp.storage import Storage

__all__ = ["EventLog", "LogAdvancedError", "EVENT_SCHEMA"]

logger = logging.getLogger(__name__)

EVENT_SCHEMA = pa.schema(
    [
        SEQ_FIELD,
        TS_FIELD,
        pa.field("principal", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        KIND_FIELD,
        pa.field("entity", pa.string(), nullable=False),
        PAYLOAD_FIELD,
        pa.field("op_id", pa.string(), nullable=True),
    ]
)


class LogAdvancedError(TableAdvancedError):
    """Someone else committed to the event log since we last read it (another registry
    instance, e.g. during a split brain): catch up before writing."""


def _to_table(events: list[Event]) -> pa.Table:
    return pa.table(
        {
            "seq": pa.array([e.seq for e in events], pa.int64()),
            "ts": ts_to_arrow([e.ts for e in events]),
            "principal": [e.principal for e in events],
            "tenant": [e.tenant for e in events],
            "kind": [e.kind for e in events],
            "entity": [e.entity for e in events],
            "payload": [e.payload_json() for e in events],
            "op_id": pa.array([e.op_id for e in events], pa.string()),
        },
        schema=EVENT_SCHEMA,
    )


def _from_table(table: pa.Table) -> list[Event]:
    if table.num_rows == 0:
        return []
    table = table.sort_by("seq")
    ts = ts_from_arrow(table["ts"])
    cols = {
        name: table[name].to_pylist()
        for name in ("seq", "principal", "tenant", "kind", "entity", "payload", "op_id")
    }
    out: list[Event] = []
    last = 0
    for i in range(table.num_rows):
        seq = int(cols["seq"][i])
        if seq == last:
            logger.warning("event log holds seq %d twice; keeping the first", seq)
            continue
        last = seq
        out.append(
            Event(
                kind=cols["kind"][i],
                entity=cols["entity"][i],
                principal=cols["principal"][i],
                tenant=cols["tenant"][i],
                payload=json.loads(cols["payload"][i]),
                op_id=cols["op_id"][i],
                seq=seq,
                ts=ts[i],
            )
        )
    return out


class EventLog:
    """Append-only event table with fencing, compaction and checkpoints.

    Args:
        storage: the platform storage root.
        compact_every: commits between compaction + checkpoint.
    """

    def __init__(self, storage: Storage, compact_every: int = 100) -> None:
        self.storage = storage
        self.uri = storage.uri("registry", "events")
        self.options = storage.delta_storage_options()
        self.compact_every = compact_every
        self._table = AppendOnlyTable(
            self.uri,
            self.options,
            create_name="raymlp_registry_events",
            label=f"the registry event log {self.uri!r}",
        )
        self._version: int | None = None  # table version we last wrote or read
        self.commits_since_compact = 0

    def _open(self) -> DeltaTable | None:
        return self._table.open()

    def read_all(self) -> list[Event]:
        """Every event, in seq order (empty for a new root)."""
        return self.read_after(0)

    def read_after(self, seq: int) -> list[Event]:
        """Events with ``seq`` above ``seq``, in order, from the latest table version.

        The writer's view: afterwards, appends expect the table at the version just read.
        """
        dt = self._open()
        if dt is None:
            return []
        table = self._table.rows_after(dt, seq)
        self._version = dt.version()
        return _from_table(table)

    def audit(self, seq: int = 0) -> list[Event]:
        """Like :meth:`read_after`, on a separate snapshot (never disturbs the writer)."""
        dt = self._table.snapshot()
        if dt is None:
            return []
        return _from_table(self._table.rows_after(dt, seq))

    def append(self, events: list[Event]) -> None:
        """Commit ``events`` (seq already assigned) in one Delta transaction.

        Raises LogAdvancedError (nothing written) when the table moved since our last read or
        write — also when another writer commits in the moment before ours: the commit is
        fenced by Delta's optimistic concurrency, so two writers can never both commit on top
        of one version (the same seq twice). Before the first read the log expects no table.
        """
        if not events:
            return
        try:
            self._version = self._table.append(
                _to_table(events), expect_version=self._expected(), refresh=True
            )
        except TableAdvancedError as e:
            raise LogAdvancedError(str(e)) from None
        self.commits_since_compact += 1

    def _expected(self) -> int:
        # None: no table seen yet (a new root, or nothing read): the append must create it.
        return NO_TABLE if self._version is None else self._version

    @property
    def needs_compaction(self) -> bool:
        return self.commits_since_compact >= self.compact_every

    def compact(self) -> dict[str, Any]:
        """Compact small files and write a checkpoint (call while no append runs)."""
        if self._open() is None:
            return {}
        try:
            metrics = self._table.compact(expect_version=self._expected())
        except TableAdvancedError as e:
            raise LogAdvancedError(str(e)) from None
        self._version = self._table.version()
        self.commits_since_compact = 0
        return metrics

    def version(self) -> int | None:
        return self._version
