"""The one Delta write protocol of raymlp, and the one append-only event table.

Staged commits (offline feature tables, predictions tables): Ray tasks write Parquet files into
the table's directory (:func:`write_staged_file`), then one driver commits them all in one
transaction tagged with a Delta app transaction ``txn_id`` (:func:`commit_staged`). The commit
is idempotent: a txn already committed (a retry whose first reply was lost, or a concurrent
retry of the same run) is found and its version returned; nothing is written twice. A failed
run's files are removed by :func:`discard_uncommitted` (kept when the txn did commit)::

    rel, size = write_staged_file(storage, ("predictions", "scores"), table, "part-run1")
    version, now = commit_staged(storage, ("predictions", "scores"), files, schema,
                                 txn_id="run1", metadata={}, table="predictions table 'scores'")

Append-only tables (registry and monitor event logs, prediction/feedback logs):
:class:`AppendOnlyTable` opens lazily, is created by its first append, fences appends on the
version last seen, compacts + checkpoints, and translates every storage failure into one
:class:`~raymlp.errors.StorageError` naming the table.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, Transaction, create_table_with_add_actions

from raymlp.errors import NotFoundError, StorageError
from raymlp.storage import Storage

__all__ = [
    "COMMIT_ATTEMPTS",
    "HISTORY_WINDOW",
    "TXN_KEY",
    "retry_commit",
    "write_staged_file",
    "delete_staged",
    "discard_uncommitted",
    "create_table",
    "add_missing_columns",
    "find_commit",
    "version_of_txn",
    "commit_staged",
    "TableAdvancedError",
    "NO_TABLE",
    "AppendOnlyTable",
    "SEQ_FIELD",
    "TS_FIELD",
    "KIND_FIELD",
    "PAYLOAD_FIELD",
    "ts_to_arrow",
    "ts_from_arrow",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Tries of a commit that lost a race with a concurrent commit (CommitFailedError).
COMMIT_ATTEMPTS = 8
#: How many recent commits are searched for a txn's commit. Large, because concurrent writers
#: (pushes, other runs) may commit between ours and the lookup; searched in growing steps.
HISTORY_WINDOW = 1000
#: Commit metadata key carrying the txn id of a staged commit.
TXN_KEY = "raymlp.txn"
_FIRST_WINDOW = 16


def retry_commit(fn: Callable[[], T], attempts: int = COMMIT_ATTEMPTS) -> T:
    """Call ``fn`` until it does not raise CommitFailedError (a concurrent commit won), with a
    short exponential backoff; the last failure propagates."""
    for attempt in range(attempts):
        try:
            return fn()
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.5, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


# -- staged files ---------------------------------------------------------------------------


def write_staged_file(
    storage: Storage, parts: Sequence[str], table: pa.Table, prefix: str
) -> tuple[str, int]:
    """Write ``table`` as one Parquet file ``<prefix>-<random>.parquet`` in the table directory
    ``parts`` (not yet committed: invisible to readers). Returns ``(path relative to the
    table, size in bytes)``."""
    rel = f"{prefix}-{uuid.uuid4().hex[:12]}.parquet"
    path = storage.path(*parts, rel)
    try:
        storage.filesystem.create_dir(storage.path(*parts), recursive=True)
        with storage.filesystem.open_output_stream(path) as out:
            pq.write_table(table, out, compression="zstd")
        size = storage.filesystem.get_file_info(path).size
    except OSError as e:
        raise StorageError(f"cannot write {path!r}: {e}", uri=storage.uri(*parts)) from e
    return rel, int(size)


def delete_staged(storage: Storage, parts: Sequence[str], prefix: str) -> int:
    """Delete the files named ``<prefix>-*`` in the table directory; returns how many."""
    n = 0
    for name in storage.listdir(*parts):
        if name.startswith(prefix + "-"):
            storage.delete(*parts, name)
            n += 1
    return n


def discard_uncommitted(storage: Storage, parts: Sequence[str], prefix: str, txn_id: str) -> int:
    """After a failed commit: delete the run's staged files unless ``txn_id`` did commit (only
    the reply was lost; the files are then table data). Returns how many were deleted."""
    dt = storage.open_delta(*parts)
    if dt is not None and dt.transaction_version(txn_id) is not None:
        return 0
    return delete_staged(storage, parts, prefix)


# -- tables ---------------------------------------------------------------------------------


def create_table(
    storage: Storage,
    parts: Sequence[str],
    schema: pa.Schema,
    *,
    name: str,
    description: str | None,
    what: str,
    commit_properties: CommitProperties | None = None,
) -> DeltaTable:
    """Create the Delta table at ``parts``; when a concurrent creator won, open its table.
    ``what`` names the table in errors (``"the Delta table of 'profile'"``)."""
    uri = storage.uri(*parts)
    if storage.is_local:
        storage.makedirs(*parts)
    try:
        return DeltaTable.create(
            uri,
            schema,
            mode="error",
            name=name,
            description=description,
            storage_options=storage.delta_storage_options(),
            commit_properties=commit_properties,
        )
    except Exception as e:  # noqa: BLE001 - deltalake raises a generic error for "exists"
        if "exist" not in str(e).lower():
            raise StorageError(f"cannot create {what}: {e}", uri=uri) from e
        found = storage.open_delta(*parts)
        if found is None:
            raise StorageError(f"cannot create {what}: {e}", uri=uri) from e
        return found


def add_missing_columns(
    storage: Storage,
    parts: Sequence[str],
    dt: DeltaTable,
    schema: pa.Schema,
    commit_properties: CommitProperties | None = None,
) -> DeltaTable:
    """Add the columns of ``schema`` that the table lacks (one commit); returns the table as
    it is afterwards (``dt`` itself when nothing was missing)."""
    have = set(pa.schema(dt.schema().to_arrow()).names)
    missing = [f for f in schema if f.name not in have]
    if not missing:
        return dt
    from deltalake import Field

    dt.alter.add_columns(
        [Field.from_arrow(f) for f in missing], commit_properties=commit_properties
    )
    return storage.open_delta(*parts)


# -- commits by txn -------------------------------------------------------------------------


def find_commit(
    dt: DeltaTable, match: Callable[[dict[str, Any]], bool], limit: int | None
) -> dict[str, Any] | None:
    """The newest commit info matching ``match`` among the last ``limit`` commits (None: the
    whole log), searched in growing windows; None when not found."""
    n = _FIRST_WINDOW if limit is None else min(_FIRST_WINDOW, limit)
    while True:
        entries = dt.history(n)
        for entry in entries:
            if match(entry):
                return entry
        if len(entries) < n or (limit is not None and n >= limit):
            return None
        n = n * 4 if limit is None else min(n * 4, limit)


def version_of_txn(dt: DeltaTable, txn_id: str, *, table: str) -> int:
    """The version of the commit that carried ``txn_id``.

    Raises StorageError when that commit is not among the last :data:`HISTORY_WINDOW`
    commits: never guesses the latest version instead (it could be someone else's commit).
    """
    entry = find_commit(dt, lambda e: e.get(TXN_KEY) == txn_id, HISTORY_WINDOW)
    if entry is None:
        raise StorageError(
            f"{table}: the commit of txn {txn_id!r} is not in the last {HISTORY_WINDOW} commits "
            "of the Delta log (rule: a txn's commit is looked up in recent history)",
            uri=dt.table_uri,
            table=table,
            txn=txn_id,
        )
    return int(entry["version"])


def commit_staged(
    storage: Storage,
    parts: Sequence[str],
    files: list[dict[str, Any]],
    schema: pa.Schema,
    *,
    txn_id: str,
    metadata: dict[str, str],
    table: str,
) -> tuple[int, bool]:
    """Commit staged ``files`` (``path``, ``size`` and ``stats`` JSON or ``num_records``) to
    the existing table at ``parts`` in one transaction carrying ``txn_id`` and ``metadata``.

    Idempotent: if ``txn_id`` is already committed — before we start, or by a concurrent
    retry while we lose a commit race — nothing is written. Returns ``(version of the txn's
    commit, committed_now)``. ``table`` names the table in errors.
    """
    dt = storage.open_delta(*parts)
    if dt is None:
        raise NotFoundError(f"{table} does not exist", kind="table", name=table)
    if dt.transaction_version(txn_id) is not None:
        return version_of_txn(dt, txn_id, table=table), False
    now_ms = int(time.time() * 1000)
    actions = [
        AddAction(
            path=f["path"],
            size=f["size"],
            partition_values={},
            modification_time=now_ms,
            data_change=True,
            stats=f.get("stats") or json.dumps({"numRecords": f["num_records"]}),
        )
        for f in files
    ]
    props = CommitProperties(
        custom_metadata={**metadata, TXN_KEY: txn_id},
        app_transactions=[Transaction(txn_id, 1)],
    )
    committed = False

    def attempt() -> None:
        nonlocal committed
        current = storage.open_delta(*parts)
        if current is None:
            raise NotFoundError(f"{table} does not exist", kind="table", name=table)
        if current.transaction_version(txn_id) is not None:
            return  # a concurrent retry of the same txn committed first
        current.create_write_transaction(actions, "append", schema, commit_properties=props)
        committed = True

    retry_commit(attempt)
    return version_of_txn(storage.open_delta(*parts), txn_id, table=table), committed


# -- append-only tables ---------------------------------------------------------------------


class TableAdvancedError(Exception):
    """Someone else committed to an :class:`AppendOnlyTable` since the version we expected."""


#: ``expect_version`` of an append that must create the table (no table yet).
NO_TABLE = -1
#: Commit properties of a fenced commit: fail, never rebase, when the next version is taken.
_NO_RETRY = CommitProperties(max_commit_retries=0)


def _describe(expect_version: int) -> str:
    """An expected table version as an error message says it."""
    if expect_version == NO_TABLE:
        return "no table yet (an empty log)"
    return f"version {expect_version}"


class AppendOnlyTable:
    """An append-only Delta table at ``uri``: opened lazily, created by its first append.

    Args:
        uri: the table URI.
        options: deltalake storage options.
        create_name: the Delta table name set when the first append creates it.
        label: how errors name the table (``"the registry event log '<uri>'"``).
        partition_by: partition columns.
    """

    def __init__(
        self,
        uri: str,
        options: dict[str, str] | None,
        *,
        create_name: str,
        label: str | None = None,
        partition_by: list[str] | None = None,
    ) -> None:
        self.uri = uri
        self.options = options
        self.create_name = create_name
        self.label = label or repr(uri)
        self.partition_by = partition_by
        self._dt: DeltaTable | None = None

    def _error(self, verb: str, e: BaseException) -> StorageError:
        return StorageError(f"cannot {verb} {self.label}: {e}", uri=self.uri)

    def open(self) -> DeltaTable | None:
        """The writer's (cached) handle, or None while the table does not exist."""
        if self._dt is None:
            self._dt = self.snapshot()
        return self._dt

    def snapshot(self) -> DeltaTable | None:
        """A separate, fresh handle (readers never disturb the writer's), or None."""
        try:
            return DeltaTable(self.uri, storage_options=self.options)
        except TableNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - object-store errors vary by backend
            raise self._error("open", e) from e

    def append(
        self, data: pa.Table, *, expect_version: int | None = None, refresh: bool = False
    ) -> int:
        """Commit ``data`` in one transaction; returns the table version after it.

        With ``expect_version`` the commit is fenced: it is made from a snapshot at exactly that
        version and must become the next one (Delta's optimistic concurrency, no retry), else
        TableAdvancedError and nothing is committed: another writer committed first, even in the
        moment between our check and our commit. The data file the losing commit wrote is
        removed again (best effort), so lost races leave no orphan files in the table
        directory. :data:`NO_TABLE` expects that the table does not exist yet (this append
        creates it). ``refresh`` brings the handle up to date before an unfenced write
        (implied by ``expect_version``).
        """
        fenced = expect_version is not None
        try:
            dt = self.open()
            if dt is None:
                if fenced and expect_version != NO_TABLE:
                    raise TableAdvancedError(
                        f"{self.label} does not exist, expected it at version {expect_version}"
                    )
                if fenced:
                    self._commit_fenced(None, data)
                else:
                    self._create(data)
                self._dt = dt = DeltaTable(self.uri, storage_options=self.options)
            elif expect_version is not None:
                self._fence(dt, expect_version)
                ours = dt.version() + 1
                self._commit_fenced(dt, data)
                dt.load_as_version(ours)  # exactly our commit: never past one we did not read
            else:
                if refresh:
                    dt.update_incremental()
                write_deltalake(dt, data, mode="append", partition_by=self.partition_by)
            return dt.version()
        except TableAdvancedError:
            raise
        except Exception as e:  # noqa: BLE001
            raise self._error("append to", e) from e

    def _create(self, data: pa.Table) -> None:
        """The first append of an unfenced writer (a concurrent creator's table is joined)."""
        write_deltalake(
            self.uri,
            data,
            mode="append",
            partition_by=self.partition_by,
            storage_options=self.options,
            name=self.create_name,
        )

    def _filesystem(self) -> pafs.FileSystem:
        """The table directory as a filesystem (paths relative to the table root)."""
        if "://" not in self.uri or self.uri.startswith("file://"):
            os.makedirs(self.uri.removeprefix("file://"), exist_ok=True)
        return pafs.PyFileSystem(DeltaStorageHandler(self.uri, self.options))

    def _commit_fenced(self, dt: DeltaTable | None, data: pa.Table) -> None:
        """Write ``data`` as one file of our own and commit it on the snapshot ``dt`` (None:
        the commit creates the table) with no commit retry: a commit that finds the next
        version taken fails instead of being rebased on top of the other writer's (the check
        in :meth:`_fence` alone leaves a window between the check and the commit in which two
        writers both pass it: a forked history). We write the file ourselves, so a lost
        commit knows exactly which file is its own to remove."""
        if self.partition_by:
            raise ValueError("a fenced append is for unpartitioned tables")
        fs = self._filesystem()
        name = f"part-fenced-{uuid.uuid4().hex}.parquet"
        with fs.open_output_stream(name) as out:
            pq.write_table(data, out, compression="zstd")
        add = AddAction(
            path=name,
            size=int(fs.get_file_info(name).size),
            partition_values={},
            modification_time=int(time.time() * 1000),
            data_change=True,
            stats=json.dumps({"numRecords": data.num_rows}),
        )
        try:
            if dt is None:
                create_table_with_add_actions(
                    self.uri,
                    Schema.from_arrow(data.schema),
                    [add],
                    mode="error",
                    name=self.create_name,
                    storage_options=self.options,
                    commit_properties=_NO_RETRY,
                )
            else:
                dt.create_write_transaction(
                    [add], "append", data.schema, commit_properties=_NO_RETRY
                )
        except CommitFailedError as e:
            self._discard_lost(fs, name)
            if dt is None:
                raise TableAdvancedError(f"{self.label} was created by another writer") from e
            raise TableAdvancedError(
                f"{self.label}: another writer committed after version {dt.version()} "
                "first; nothing written"
            ) from e
        except DeltaError as e:
            # Creating a table that appeared since open(): deltalake says so only in a generic
            # error ("A Delta Lake table already exists at that location").
            if dt is None and "already exists" in str(e) and self.snapshot() is not None:
                self._discard_lost(fs, name)
                raise TableAdvancedError(f"{self.label} was created by another writer") from e
            raise

    def _discard_lost(self, fs: pafs.FileSystem, name: str) -> None:
        """Remove the data file ``name`` of a commit that lost its race: no log entry
        references it. Best effort (a file left behind is only dead weight), and never a file
        that the log turns out to reference after all."""
        try:
            current = self.snapshot()
            if current is not None and any(
                u.rsplit("/", 1)[-1] == name for u in current.file_uris()
            ):
                return
            fs.delete_file(name)
        except Exception as e:  # noqa: BLE001 - a leftover file is harmless
            logger.warning("could not remove %s of a lost commit to %s: %s", name, self.label, e)

    def _fence(self, dt: DeltaTable, expect_version: int) -> None:
        # The cheap early check (no data file written when it fails); the commit itself is
        # fenced again by _commit_fenced/compact, which closes the race window after this check.
        dt.update_incremental()
        if dt.version() != expect_version:
            raise TableAdvancedError(
                f"{self.label} at version {dt.version()}, expected {_describe(expect_version)}"
            )

    def compact(
        self, *, expect_version: int | None = None, cleanup_metadata: bool = False
    ) -> dict[str, Any]:
        """Compact small files and write a checkpoint (and with ``cleanup_metadata`` drop
        expired log files); ``{}`` when there is no table. Fenced like :meth:`append`."""
        dt = self.open()
        if dt is None:
            return {}
        try:
            if expect_version is not None:
                self._fence(dt, expect_version)
            metrics = dt.optimize.compact()
            dt.create_checkpoint()
            if cleanup_metadata:
                dt.cleanup_metadata()
            if expect_version is not None:
                self._check_compaction(dt, expect_version)
        except TableAdvancedError:
            raise
        except CommitFailedError as e:
            if expect_version is None:
                raise self._error("compact", e) from e
            raise TableAdvancedError(
                f"{self.label}: another writer committed during compaction; nothing compacted"
            ) from e
        except Exception as e:  # noqa: BLE001
            raise self._error("compact", e) from e
        return dict(metrics or {})

    def _check_compaction(self, dt: DeltaTable, expect_version: int) -> None:
        """After a fenced compaction: the handle must be at ``expect_version`` or at our own
        OPTIMIZE commit on top of it. deltalake rebases an OPTIMIZE over concurrent appends
        (harmless for the data; ``max_commit_retries`` is not honoured there), which moves the
        handle past commits the caller never read: its expected version would then skip them."""
        v = dt.version()
        if v == expect_version:
            return
        last = dt.history(1)[0] if v == expect_version + 1 else {}
        if last.get("operation") == "OPTIMIZE" and last.get("readVersion") == expect_version:
            return
        raise TableAdvancedError(
            f"{self.label}: another writer committed during compaction (now at version {v}, "
            f"expected version {expect_version} + our compaction): catch up"
        )

    def version(self) -> int | None:
        dt = self.open()
        return None if dt is None else dt.version()

    def read(
        self,
        dt: DeltaTable,
        *,
        columns: list[str] | None = None,
        filters: Any = None,
        refresh: bool = False,
    ) -> pa.Table:
        """Rows of the snapshot ``dt`` (brought up to date first with ``refresh``)."""
        try:
            if refresh:
                dt.update_incremental()
            return dt.to_pyarrow_table(columns=columns, filters=filters)
        except Exception as e:  # noqa: BLE001
            raise self._error("read", e) from e

    def rows_after(self, dt: DeltaTable, seq: int, *, refresh: bool = True) -> pa.Table:
        """Event rows with ``seq`` above ``seq``, in seq order (event tables)."""
        filters = [("seq", ">", int(seq))] if seq > 0 else None
        table = self.read(dt, filters=filters, refresh=refresh)
        return table.sort_by("seq") if table.num_rows else table


# -- event rows (seq, ts, kind, payload) ----------------------------------------------------

SEQ_FIELD = pa.field("seq", pa.int64(), nullable=False)
TS_FIELD = pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False)
KIND_FIELD = pa.field("kind", pa.string(), nullable=False)
PAYLOAD_FIELD = pa.field("payload", pa.string(), nullable=False)


def ts_to_arrow(seconds: Sequence[float]) -> pa.Array:
    """Unix seconds as the events' UTC microsecond timestamps."""
    return pa.array([round(s * 1_000_000) for s in seconds], pa.int64()).cast(TS_FIELD.type)


def ts_from_arrow(column: pa.ChunkedArray | pa.Array) -> list[float]:
    """The inverse of :func:`ts_to_arrow`: a timestamp column as unix seconds."""
    return pc.divide(column.cast(pa.int64()).cast(pa.float64()), 1_000_000.0).to_pylist()
