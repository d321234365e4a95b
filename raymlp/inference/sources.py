"""Events sources for streaming inference: an interface, and new versions of a Delta table.

An :class:`EventSource` hands out micro-batches of events after an *offset* — any JSON value the
source understands (a Delta version, ``{partition: offset}`` for a Kafka-style bus). The
streaming job stores the offset of each batch in the same Delta commit as the batch's
predictions, and on restart asks the source for what comes after the stored offset; so a source
only has to be *replayable* from an offset: ``poll(o)`` called twice returns the same events.

:class:`DeltaTableSource` tails a Delta table — batch and streaming read the same tables. Its
offset is the last table version consumed; a poll reads only the data files that the next
commits *added* (``add`` actions with ``dataChange: true`` in the Delta log), so compaction
and other rewrites do not replay events::

    src = DeltaTableSource("data/events", max_records=1000)
    batch, offset = src.poll(None)          # from the first version
    batch, offset = src.poll(offset)        # only what was committed since

A Kafka adapter subclasses :class:`EventSource` (``poll`` reads from the stored partition
offsets, returns a pyarrow table and the next offsets) and is named in the job config as
``source: {kind: adapter, adapter: my_pkg.kafka:KafkaSource, options: {...}}``.
"""

from __future__ import annotations

import json
import posixpath
from abc import ABC, abstractmethod
from typing import Any, cast

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs

from raymlp._private.importing import ImportPathError, resolve_import_path
from raymlp.config import AdapterSourceConfig, DeltaSourceConfig, StreamSourceConfig
from raymlp.errors import NotFoundError, StorageError, ValidationError

__all__ = ["EventSource", "DeltaTableSource", "EVENT_ID", "load_source"]

#: The column of source-assigned event ids (used unless the job names its own id column).
EVENT_ID = "_event_id"


class EventSource(ABC):
    """A replayable source of event micro-batches (subclass it for a message bus).

    ``poll(after_offset)`` returns ``(events, next_offset)``: the events after ``after_offset``
    (``None``: from the source's start) as a pyarrow table — at most the source's batch size —
    and the offset that marks them consumed. No new events: an empty table (or None) and the
    same offset. Offsets must be JSON-serialisable; they are stored with the outputs.
    """

    @abstractmethod
    def poll(self, after_offset: Any) -> tuple[pa.Table | None, Any]:
        """The next micro-batch after ``after_offset`` and its end offset."""

    def describe(self) -> dict[str, Any]:
        """What the source reads (recorded in the output's lineage)."""
        return {"kind": type(self).__name__}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (called when the job stops)."""


class DeltaTableSource(EventSource):
    """Tail a Delta table: each poll returns the rows its next commits added.

    Args:
        path: table path or URI.
        max_records: stop adding commits to a batch once it holds this many rows (a batch
            always holds whole commits, at least one).
        start_version: where a stream without an offset starts (default: version 0).
        storage_options: object-store options for deltalake.

    Event ids (column ``_event_id``) are ``"<version>:<file>:<row>"``: stable across replays.
    """

    def __init__(
        self,
        path: str,
        *,
        max_records: int = 10_000,
        start_version: int | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.path = path.rstrip("/")
        self.max_records = int(max_records)
        self.start_version = start_version
        self.storage_options = storage_options
        if "://" in self.path and not self.path.startswith("file://"):
            self.fs, self._base = pafs.FileSystem.from_uri(self.path)
        else:
            local = self.path[len("file://") :] if self.path.startswith("file://") else self.path
            self.fs, self._base = pafs.LocalFileSystem(), posixpath.abspath(local)

    def describe(self) -> dict[str, Any]:
        return {"kind": "delta", "path": self.path}

    def _table(self, version: int | None = None) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.path, version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            raise NotFoundError(
                f"events table {self.path!r} does not exist", kind="events_table", name=self.path
            ) from None

    def latest_version(self) -> int:
        return self._table().version()

    def _commit_adds(self, version: int) -> list[dict[str, Any]] | None:
        """The data-changing ``add`` actions of one commit, or None when its log entry is gone
        (cleaned up after a checkpoint, past the log retention)."""
        path = posixpath.join(self._base, "_delta_log", f"{version:020d}.json")
        try:
            if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
                return None
            with self.fs.open_input_stream(path) as f:
                text = f.read().decode("utf-8")
        except OSError as e:
            raise StorageError(f"cannot read {path!r}: {e}", uri=self.path) from e
        adds = []
        for line in text.splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            add = action.get("add")
            if add and add.get("dataChange", True):
                adds.append(add)
        return adds

    def _read(self, version: int, adds: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
        tables = []
        for i, add in enumerate(adds):
            rel = add["path"]
            full = rel if "://" in rel else posixpath.join(self._base, _unquote(rel))
            if "://" in full:
                full = full.split("://", 1)[1]
            part = {k: v for k, v in (add.get("partitionValues") or {}).items()}
            file_schema = pa.schema([f for f in schema if f.name not in part])
            t = pds.dataset(full, schema=file_schema, format="parquet", filesystem=self.fs)
            t = t.to_table()
            for name, value in part.items():
                typ = schema.field(name).type if name in schema.names else pa.string()
                t = t.append_column(name, pa.array([value] * t.num_rows, pa.string()).cast(typ))
            ids = [f"{version}:{i}:{r}" for r in range(t.num_rows)]
            t = t.select(schema.names).append_column(EVENT_ID, pa.array(ids, pa.string()))
            tables.append(t)
        if not tables:
            return schema.append(pa.field(EVENT_ID, pa.string())).empty_table()
        return pa.concat_tables(tables)

    def poll(self, after_offset: Any) -> tuple[pa.Table, int]:
        if after_offset is None:
            after = (self.start_version or 0) - 1
        elif isinstance(after_offset, int) and not isinstance(after_offset, bool):
            after = after_offset
        else:
            raise ValidationError(
                f"Delta source offset {after_offset!r} is not a table version",
                field="offset",
                value=str(after_offset),
                rule="an integer version",
            )
        latest = self.latest_version()
        if after >= latest:
            return self._empty(), after
        schema = pa.schema(self._table(latest).schema().to_arrow())
        batches: list[pa.Table] = []
        rows, version = 0, after
        while version < latest and (rows < self.max_records or not batches):
            version += 1
            adds = self._commit_adds(version)
            if adds is None:
                raise StorageError(
                    f"events table {self.path!r}: the log entry of version {version} is gone "
                    "(log cleanup): this stream's offset is older than the table's log "
                    "retention (rule: restart the stream with a new name or source.start_version)",
                    uri=self.path,
                    version=version,
                )
            t = self._read(version, adds, schema)
            batches.append(t)
            rows += t.num_rows
        return pa.concat_tables(batches) if batches else self._empty(), version

    def _empty(self) -> pa.Table:
        return pa.table({EVENT_ID: pa.array([], pa.string())})


def _unquote(path: str) -> str:
    from urllib.parse import unquote

    return unquote(path)


def load_source(cfg: StreamSourceConfig, storage_options: dict[str, str] | None = None) -> Any:
    """The :class:`EventSource` a job config describes."""
    if isinstance(cfg, DeltaSourceConfig):
        return DeltaTableSource(
            cfg.path or "",
            max_records=cfg.max_records,
            start_version=cfg.start_version,
            storage_options=storage_options,
        )
    # The config's kinds are delta and adapter (kind_union): anything else is an adapter.
    adapter = cast(AdapterSourceConfig, cfg).adapter
    try:
        cls = resolve_import_path(adapter or "", what="source.adapter")
    except ImportPathError as e:
        raise ValidationError(
            f"source.adapter {adapter!r} cannot be imported ({e.detail})",
            field="source.adapter",
            value=adapter,
            rule="importable 'module:Class'",
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, EventSource)):
        raise ValidationError(
            f"source.adapter {adapter!r} is not an EventSource subclass",
            field="source.adapter",
            value=adapter,
            rule="EventSource subclass",
        )
    options = cfg.options if isinstance(cfg, AdapterSourceConfig) else {}
    # Documented contract (docs/inference.md): Class(max_records=..., **options); EventSource
    # itself declares no __init__, so the checker cannot see it.
    return cls(max_records=cfg.max_records, **options)  # type: ignore[call-arg]
