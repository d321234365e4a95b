"""The offline store: one Delta table per feature view at ``<root>/features/<view>``.

Tables are append-only (ingest, push) except when a forced incompatible ``apply`` replaces the
schema; every write is one ACID commit, and time travel by version is what makes a training set
reproducible. Data files written by Ray Data tasks are committed together by
:func:`commit_files`, idempotently (a retried commit with the same ``txn_id`` is a no-op); the
write protocol itself is :mod:`raymlp._private.delta`, shared with the predictions tables.

Example::

    version = append(storage, "customer_profile", table)          # small appends (push)
    version, files = file_uris(storage, "customer_profile", version=3)
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
from deltalake import CommitProperties, DeltaTable, write_deltalake

from raymlp._private import delta
from raymlp.config import FeatureView
from raymlp.errors import NotFoundError, StorageError
from raymlp.features.dtypes import SEQ_COLUMN, TS_TYPE, arrow_type
from raymlp.storage import Storage

__all__ = [
    "TABLES_DIR",
    "stored_schema",
    "table_uri",
    "open_table",
    "table_columns",
    "ensure_table",
    "write_data_file",
    "commit_files",
    "delete_files",
    "discard_uncommitted",
    "append",
    "file_uris",
    "data_files",
    "files_since",
    "read_files",
    "table_info",
]

TABLES_DIR = "features"
_DTYPE_OF = {
    str(arrow_type(d)): d
    for d in ("int32", "int64", "float32", "float64", "string", "bool", "timestamp")
}


def stored_schema(view: FeatureView, keys: list[tuple[str, str]]) -> pa.Schema:
    """The Delta schema of a view: keys, timestamp, ``_seq``, features (all nullable)."""
    fields = [pa.field(k, arrow_type(t)) for k, t in keys]
    fields.append(pa.field(view.timestamp_field, TS_TYPE))
    fields.append(pa.field(SEQ_COLUMN, pa.int64()))
    fields += [pa.field(f.name, arrow_type(f.dtype)) for f in view.features]
    return pa.schema(fields)


def table_uri(storage: Storage, view: str) -> str:
    return storage.uri(TABLES_DIR, view)


def open_table(storage: Storage, view: str, version: int | None = None) -> DeltaTable | None:
    """The view's Delta table (at ``version``), or None if it does not exist yet."""
    try:
        return storage.open_delta(TABLES_DIR, view, version=version)
    except Exception as e:  # a bad version raises a generic DeltaError
        if version is not None and "version" in str(e).lower():
            raise NotFoundError(
                f"view {view!r} has no table version {version} ({e})",
                kind="table_version",
                name=view,
                version=version,
            ) from None
        raise StorageError(
            f"cannot open the Delta table of {view!r}: {e}", uri=table_uri(storage, view)
        ) from e


def table_columns(storage: Storage, view: str) -> dict[str, str]:
    """``{column: dtype}`` of the view's table as stored ({} if there is no table)."""
    dt = open_table(storage, view)
    if dt is None:
        return {}
    schema = pa.schema(dt.schema().to_arrow())
    return {f.name: _DTYPE_OF.get(str(f.type), str(f.type)) for f in schema}


def ensure_table(
    storage: Storage,
    view: FeatureView,
    keys: list[tuple[str, str]],
    op: str | None,
    *,
    metadata: dict[str, str] | None = None,
) -> int | None:
    """Make the view's table match its definition; returns the table version after it.

    ``op`` is the plan's ``table_op``: ``create`` (no-op if it already exists, e.g. after a
    crash between creating it and saving the registry), ``add_columns`` (adds every declared
    feature the table lacks), ``replace`` (a new version with the new schema and no rows; older
    versions stay readable by time travel) or None (only adds missing columns).
    """
    schema = stored_schema(view, keys)
    uri = table_uri(storage, view.name)
    opts = storage.delta_storage_options()
    props = CommitProperties(custom_metadata=metadata or None)
    dt = open_table(storage, view.name)
    if op == "replace" and dt is not None:
        write_deltalake(
            uri,
            schema.empty_table(),
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=opts,
            commit_properties=props,
        )
        # Just overwritten, so the table exists.
        return cast(DeltaTable, open_table(storage, view.name)).version()
    parts = (TABLES_DIR, view.name)
    if dt is None:
        dt = delta.create_table(
            storage,
            parts,
            schema,
            name=view.name,
            description=view.description or None,
            what=f"the Delta table of {view.name!r}",
            commit_properties=props,
        )
    return delta.add_missing_columns(storage, parts, dt, schema, props).version()


def _iso(us: int, *, ceil: bool) -> str:
    ms = math.ceil(us / 1000) if ceil else us // 1000
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def write_data_file(
    storage: Storage, view: str, table: pa.Table, prefix: str, ts_field: str
) -> dict[str, Any] | None:
    """Write one Parquet data file into the view's table directory (not yet committed).

    Returns the add-action fields (``path`` relative to the table, ``size``, ``stats`` with
    min/max of the timestamp and ``_seq``), or None for an empty table.
    """
    if table.num_rows == 0:
        return None
    rel, size = delta.write_staged_file(storage, (TABLES_DIR, view), table, prefix)
    ts = table.column(ts_field).cast(pa.int64())
    seq = table.column(SEQ_COLUMN)
    tmin, tmax = pc.min_max(ts).values()
    smin, smax = pc.min_max(seq).values()
    stats = {
        "numRecords": table.num_rows,
        "minValues": {ts_field: _iso(tmin.as_py(), ceil=False), SEQ_COLUMN: smin.as_py()},
        "maxValues": {ts_field: _iso(tmax.as_py(), ceil=True), SEQ_COLUMN: smax.as_py()},
        "nullCount": {ts_field: 0, SEQ_COLUMN: 0},
    }
    return {
        "path": rel,
        "size": int(size),
        "stats": json.dumps(stats),
        "num_records": table.num_rows,
    }


def commit_files(
    storage: Storage,
    view: str,
    files: list[dict[str, Any]],
    *,
    txn_id: str,
    metadata: dict[str, str] | None = None,
) -> tuple[int, bool]:
    """Commit data files written by :func:`write_data_file` in one transaction.

    Idempotent: the commit carries the Delta app transaction ``txn_id``; if a commit with it
    already exists (a retried call whose first reply was lost), nothing is written again.
    Returns ``(version, committed_now)``; StorageError if the txn's commit cannot be found in
    the recent Delta log.
    """
    dt = open_table(storage, view)
    if dt is None:
        raise NotFoundError(f"view {view!r} has no table (apply it first)", kind="table", name=view)
    return delta.commit_staged(
        storage,
        (TABLES_DIR, view),
        files,
        pa.schema(dt.schema().to_arrow()),
        txn_id=txn_id,
        metadata=metadata or {},
        table=f"feature table {view!r}",
    )


def delete_files(storage: Storage, view: str, prefix: str) -> int:
    """Delete uncommitted data files named ``<prefix>-*`` (after a failed ingest)."""
    return delta.delete_staged(storage, (TABLES_DIR, view), prefix)


def discard_uncommitted(storage: Storage, view: str, prefix: str, txn_id: str) -> int:
    """After a failed commit: delete the ``<prefix>-*`` files unless ``txn_id`` committed."""
    return delta.discard_uncommitted(storage, (TABLES_DIR, view), prefix, txn_id)


def append(
    storage: Storage, view: str, table: pa.Table, metadata: dict[str, str] | None = None
) -> int:
    """Append a (small) table in one commit; returns the new version. The table must exist."""
    if open_table(storage, view) is None:
        raise NotFoundError(f"view {view!r} has no table (apply it first)", kind="table", name=view)
    uri = table_uri(storage, view)
    props = CommitProperties(custom_metadata=metadata or None)
    delta.retry_commit(
        lambda: write_deltalake(
            uri,
            table,
            mode="append",
            storage_options=storage.delta_storage_options(),
            commit_properties=props,
        )
    )
    # Checked above and just appended to, so the table exists.
    return cast(DeltaTable, open_table(storage, view)).version()


def file_uris(storage: Storage, view: str, version: int | None = None) -> tuple[int, list[str]]:
    """``(version, data file URIs)`` of the table at ``version`` (default: latest)."""
    dt = open_table(storage, view, version)
    if dt is None:
        raise NotFoundError(f"view {view!r} has no table (apply it first)", kind="table", name=view)
    return dt.version(), list(dt.file_uris())


def data_files(
    storage: Storage, view: str, version: int | None = None
) -> tuple[int, list[tuple[str, int]]]:
    """``(version, [(file URI, size in bytes)])`` of the table at ``version`` (default: latest)."""
    dt = open_table(storage, view, version)
    if dt is None:
        raise NotFoundError(f"view {view!r} has no table (apply it first)", kind="table", name=view)
    adds = pa.table(dt.get_add_actions(flatten=False))
    base = table_uri(storage, view).rstrip("/")
    files = [
        (f"{base}/{p}", int(s))
        for p, s in zip(adds.column("path").to_pylist(), adds.column("size_bytes").to_pylist())
    ]
    return dt.version(), files


def files_since(storage: Storage, view: str, since: int | None) -> tuple[int, list[str]]:
    """``(latest version, files present now that were not at version ``since``)``.

    Tables are append-only, so these files hold exactly the rows written after ``since``
    (plus rows rewritten by a compaction, which re-materialise harmlessly).
    """
    version, now = file_uris(storage, view)
    if since is None or since < 0:
        return version, now
    if since >= version:
        return version, []
    _, before = file_uris(storage, view, since)
    old = set(before)
    return version, [f for f in now if f not in old]


def read_files(
    storage: Storage,
    files: list[str],
    schema: pa.Schema,
    columns: list[str],
    filter: pds.Expression | None = None,
) -> pa.Table:
    """Read ``columns`` of data files with the table's schema (files lacking a column that
    was added later read it as null)."""
    if not files:
        return schema.empty_table().select(columns)
    paths = [_fs_path(storage, f) for f in files]
    dataset = pds.dataset(paths, schema=schema, format="parquet", filesystem=storage.filesystem)
    return dataset.to_table(columns=columns, filter=filter)


def _fs_path(storage: Storage, uri: str) -> str:
    if storage.is_local:
        return uri[len("file://") :] if uri.startswith("file://") else uri
    return uri.split("://", 1)[1]


def table_info(storage: Storage, view: str, ts_field: str) -> dict[str, Any]:
    """Version, file and row counts, size, first/last event time and last commit time."""
    dt = open_table(storage, view)
    if dt is None:
        return {"version": None, "num_files": 0, "num_rows": 0}
    adds = pa.table(dt.get_add_actions(flatten=True))
    rows = adds.column("num_records").to_pylist() if adds.num_rows else []
    info: dict[str, Any] = {
        "version": dt.version(),
        "num_files": adds.num_rows,
        "num_rows": int(sum(r or 0 for r in rows)),
        "size_bytes": int(pc.sum(adds.column("size_bytes")).as_py() or 0) if adds.num_rows else 0,
        "first_event_time": None,
        "last_event_time": None,
    }
    if adds.num_rows:
        if (
            f"max.{ts_field}" in adds.column_names
            and adds.column(f"max.{ts_field}").null_count == 0
        ):
            info["first_event_time"] = pc.min(adds.column(f"min.{ts_field}")).as_py()
            info["last_event_time"] = pc.max(adds.column(f"max.{ts_field}")).as_py()
        else:  # files without stats: read the timestamp column (footers are not enough)
            schema = pa.schema(dt.schema().to_arrow())
            ts = read_files(storage, list(dt.file_uris()), schema, [ts_field]).column(0)
            if len(ts):
                info["first_event_time"] = pc.min(ts).as_py()
                info["last_event_time"] = pc.max(ts).as_py()
    hist = dt.history(1)
    if hist:
        info["last_commit_time"] = datetime.fromtimestamp(hist[0]["timestamp"] / 1000, UTC)
    return info
