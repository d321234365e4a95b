"""Prediction tables: Delta tables at ``<root>/predictions/<name>``, written by batch and
streaming inference, each commit carrying its lineage.

Batch jobs write Parquet files from Ray tasks (:func:`write_file`) and commit them in one
transaction (:func:`commit_files`); the streaming job appends one micro-batch per commit
(:func:`append`), fenced by a Delta app transaction so that two instances of a stream can never
both commit the same batch. Every commit records ``raymlp.*`` custom metadata in the Delta log —
the model version, the feature table versions read, the input, the row count — which
:func:`history` reads back::

    uri = table_uri(storage, "churn_scores")
    for run in history(storage, "churn_scores"):
        print(run["version"], run["lineage"]["model"])

The staged-commit protocol itself is :mod:`raymlp._private.delta`, shared with the offline
feature tables.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import Transaction

from raymlp._private import delta
from raymlp.errors import ConflictError, NotFoundError, SchemaError, StorageError
from raymlp.storage import Storage

__all__ = [
    "PREDICTIONS_DIR",
    "LINEAGE_KEY",
    "table_uri",
    "open_table",
    "write_file",
    "delete_files",
    "discard_uncommitted",
    "commit_files",
    "append",
    "app_version",
    "history",
    "read",
]

PREDICTIONS_DIR = "predictions"
#: Commit metadata key holding the JSON lineage record of a commit.
LINEAGE_KEY = "raymlp.lineage"


def table_uri(storage: Storage, name: str) -> str:
    """URI of the predictions table ``name`` (what deltalake and ``ray.data.read_delta`` take)."""
    return storage.uri(PREDICTIONS_DIR, name)


def open_table(storage: Storage, name: str, version: int | None = None) -> DeltaTable | None:
    """The table (at ``version``), or None when it does not exist yet."""
    return storage.open_delta(PREDICTIONS_DIR, name, version=version)


def write_file(storage: Storage, name: str, table: pa.Table, prefix: str) -> dict[str, Any] | None:
    """Write ``table`` as one Parquet file into the table's directory (not yet committed).

    Returns ``{"path" (relative), "size", "num_records"}``, or None for no rows.
    """
    if table.num_rows == 0:
        return None
    rel, size = delta.write_staged_file(storage, (PREDICTIONS_DIR, name), table, prefix)
    return {"path": rel, "size": size, "num_records": table.num_rows}


def delete_files(storage: Storage, name: str, prefix: str) -> int:
    """Delete uncommitted files named ``<prefix>-*`` (after a failed run)."""
    return delta.delete_staged(storage, (PREDICTIONS_DIR, name), prefix)


def discard_uncommitted(storage: Storage, name: str, prefix: str, txn_id: str) -> int:
    """After a failed commit: delete the ``<prefix>-*`` files unless ``txn_id`` committed."""
    return delta.discard_uncommitted(storage, (PREDICTIONS_DIR, name), prefix, txn_id)


def _file_schema(storage: Storage, name: str, rel: str) -> pa.Schema:
    path = storage.path(PREDICTIONS_DIR, name, rel)
    with storage.filesystem.open_input_file(path) as f:
        return pq.read_schema(f)


def _merged_schema(dt: DeltaTable | None, new: pa.Schema, name: str) -> pa.Schema:
    """The table's schema extended by ``new``'s extra columns; a column whose type changed is a
    SchemaError (nothing is committed)."""
    if dt is None:
        return new
    have = pa.schema(dt.schema().to_arrow())
    for f in new:
        if f.name in have.names:
            old = have.field(f.name).type
            if old != f.type and not pa.types.is_null(f.type) and not _same_kind(old, f.type):
                raise SchemaError(
                    f"predictions table {name!r}: column {f.name!r} is {old}, this write has "
                    f"{f.type} (rule: a column keeps its type; write to another table)",
                    column=f.name,
                    value=str(f.type),
                    rule="same column type",
                )
    extra = [f for f in new if f.name not in have.names]
    return pa.schema(list(have) + extra)


def _same_kind(a: pa.DataType, b: pa.DataType) -> bool:
    """Types Delta stores identically (string/large_string, timestamp units, ...)."""
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        return True
    strings = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    return any(t(a) for t in strings) and any(t(b) for t in strings)


def _create(storage: Storage, name: str, schema: pa.Schema) -> DeltaTable:
    # A concurrent creator may win: its table is used then.
    return delta.create_table(
        storage,
        (PREDICTIONS_DIR, name),
        schema,
        name=name,
        description=f"raymlp predictions: {name}",
        what=f"predictions table {name!r}",
    )


def commit_files(
    storage: Storage,
    name: str,
    files: list[dict[str, Any]],
    *,
    txn_id: str,
    metadata: dict[str, str],
) -> int:
    """Commit files written by :func:`write_file` in one transaction; returns the version.

    The table is created on the first commit; columns new to it are added first. Idempotent per
    ``txn_id`` (a Delta app transaction): a retried commit of the same run is not repeated.
    StorageError if the txn's commit cannot be found in the recent Delta log.
    """
    if not files:
        raise NotFoundError("no prediction files to commit", kind="files", name=name)
    what = f"predictions table {name!r}"
    parts = (PREDICTIONS_DIR, name)
    dt = open_table(storage, name)
    if dt is not None and dt.transaction_version(txn_id) is not None:
        return delta.version_of_txn(dt, txn_id, table=what)
    schemas = [_file_schema(storage, name, f["path"]) for f in files]
    new = pa.unify_schemas(schemas, promote_options="permissive")
    schema = _merged_schema(dt, new, name)
    dt = _create(storage, name, schema) if dt is None else dt
    dt = delta.add_missing_columns(storage, parts, dt, schema)
    version, _ = delta.commit_staged(
        storage,
        parts,
        files,
        pa.schema(dt.schema().to_arrow()),
        txn_id=txn_id,
        metadata=metadata,
        table=what,
    )
    return version


def app_version(storage: Storage, name: str, app_id: str) -> tuple[int | None, dict[str, Any]]:
    """``(last committed batch number of app_id, that commit's raymlp metadata)``; ``(None,
    {})`` when the app never committed to the table (or the table does not exist)."""
    dt = open_table(storage, name)
    if dt is None:
        return None, {}
    batch = dt.transaction_version(app_id)
    if batch is None:
        return None, {}
    want = str(batch)
    # The whole log is searched: a stream resumes from this commit's offset.
    e = delta.find_commit(
        dt, lambda e: e.get("raymlp.app") == app_id and e.get("raymlp.batch") == want, None
    )
    if e is None:
        raise StorageError(
            f"predictions table {name!r}: app {app_id!r} committed batch {batch} but its "
            "commit is no longer in the Delta log (rule: keep the log of recent commits)",
            uri=table_uri(storage, name),
        )
    return int(batch), {k: v for k, v in e.items() if k.startswith("raymlp.")}


def append(
    storage: Storage,
    name: str,
    table: pa.Table,
    *,
    app_id: str,
    batch: int,
    metadata: dict[str, str],
) -> int:
    """Append one micro-batch of ``app_id`` as commit number ``batch``; returns the version.

    Fenced: the commit goes through only if the table's last batch of ``app_id`` is
    ``batch - 1`` (ConflictError otherwise, e.g. a second instance of the same stream). The
    batch number and ``metadata`` (e.g. the source offset) are in the same atomic commit.
    An empty ``table`` still commits (the offset moves on).
    """
    props = CommitProperties(
        custom_metadata={**metadata, "raymlp.app": app_id, "raymlp.batch": str(batch)},
        app_transactions=[Transaction(app_id, batch)],
    )
    opts = storage.delta_storage_options()
    dt = open_table(storage, name)
    if dt is None:
        dt = _create(storage, name, table.schema)
    last = dt.transaction_version(app_id)
    expected = batch - 1 if batch > 1 else None
    if last != expected:
        raise ConflictError(
            f"predictions table {name!r}: {app_id!r} expected to commit batch {batch} after "
            f"{expected}, but the table holds batch {last} (another instance of the stream?)",
            app=app_id,
            batch=batch,
            found=last,
        )
    _merged_schema(dt, table.schema, name)  # a changed column type fails before writing
    try:
        # Writing against the snapshot we checked: a concurrent commit of the same app id
        # makes delta-rs fail this one (CommitFailedError), so a batch is never committed twice.
        write_deltalake(
            dt,
            table,
            mode="append",
            schema_mode="merge",
            storage_options=opts,
            commit_properties=props,
        )
    except CommitFailedError as e:
        raise ConflictError(
            f"predictions table {name!r}: batch {batch} of {app_id!r} lost a race with another "
            f"writer ({e})",
            app=app_id,
            batch=batch,
        ) from e
    # Just appended to, so the table exists.
    return cast(DeltaTable, open_table(storage, name)).version()


def history(storage: Storage, name: str, limit: int | None = 100) -> list[dict[str, Any]]:
    """Newest first: ``{"version", "timestamp", "operation", "rows", "metadata", "lineage"}`` of
    each commit (``lineage`` parsed from :data:`LINEAGE_KEY`, None for commits without one)."""
    dt = open_table(storage, name)
    if dt is None:
        raise NotFoundError(
            f"predictions table {name!r} does not exist", kind="predictions", name=name
        )
    out = []
    for e in dt.history(limit):
        meta = {k: v for k, v in e.items() if k.startswith("raymlp.")}
        raw = meta.pop(LINEAGE_KEY, None)
        out.append(
            {
                "version": int(e["version"]),
                "timestamp": e.get("timestamp"),
                "operation": e.get("operation"),
                "rows": _rows(meta, e),
                "metadata": meta,
                "lineage": json.loads(raw) if raw else None,
            }
        )
    return out


def _rows(meta: dict[str, Any], entry: dict[str, Any]) -> int | None:
    if "raymlp.rows" in meta:
        return int(meta["raymlp.rows"])
    return (entry.get("operationMetrics") or {}).get("num_added_rows")


def read(storage: Storage, name: str, version: int | None = None) -> pa.Table:
    """The whole table (at ``version``) as a pyarrow Table: for tests and small tables; use
    ``ray.data.read_delta(table_uri(...))`` for big ones."""
    dt = open_table(storage, name, version)
    if dt is None:
        raise NotFoundError(
            f"predictions table {name!r} does not exist", kind="predictions", name=name
        )
    return dt.to_pyarrow_table()
