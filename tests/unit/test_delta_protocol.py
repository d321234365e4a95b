"""The one Delta write protocol: staged files committed idempotently by txn id (real deltalake)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from raymlp._private import delta
from raymlp.errors import NotFoundError, StorageError
from raymlp.storage import Storage

PARTS = ("tables", "t")
SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("x", pa.int64())])


@pytest.fixture
def storage(tmp_path) -> Storage:
    st = Storage(str(tmp_path / "root"))
    delta.create_table(st, PARTS, SCHEMA, name="t", description=None, what="table 't'")
    return st


def stage(storage: Storage, prefix: str, ids: list[str]) -> dict:
    table = pa.table({"id": ids, "x": pa.array(range(len(ids)), pa.int64())}, schema=SCHEMA)
    rel, size = delta.write_staged_file(storage, PARTS, table, prefix)
    return {"path": rel, "size": size, "num_records": table.num_rows}


def commit(storage: Storage, files: list[dict], txn: str) -> tuple[int, bool]:
    return delta.commit_staged(
        storage, PARTS, files, SCHEMA, txn_id=txn, metadata={"raymlp.k": "v"}, table="table 't'"
    )


def rows(storage: Storage) -> int:
    return storage.open_delta(*PARTS).to_pyarrow_table().num_rows


def append_other(storage: Storage) -> None:
    write_deltalake(
        storage.uri(*PARTS), pa.table({"id": ["o"], "x": [0]}, schema=SCHEMA), mode="append"
    )


def test_recommit_of_the_same_txn_is_a_no_op_returning_its_version(storage):
    files = [stage(storage, "part-r1", ["a", "b"]), stage(storage, "part-r1", ["c"])]
    assert commit(storage, files, "r1") == (1, True)
    append_other(storage)  # a later commit by someone else
    assert commit(storage, files, "r1") == (1, False)  # not the latest version: the txn's own
    assert rows(storage) == 4
    dt = storage.open_delta(*PARTS)
    assert delta.version_of_txn(dt, "r1", table="table 't'") == 1
    assert dt.history(2)[1]["raymlp.k"] == "v"


def test_lost_commit_race_is_retried(storage, monkeypatch):
    real = DeltaTable.create_write_transaction
    calls: list[int] = []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            append_other(storage)  # the concurrent commit that wins the race
            raise CommitFailedError("version already exists")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", flaky)
    files = [stage(storage, "part-r2", ["a"])]
    assert commit(storage, files, "r2") == (2, True)
    assert len(calls) == 2 and rows(storage) == 2


def test_retry_finds_the_txn_committed_by_a_concurrent_retry(storage, monkeypatch):
    real = DeltaTable.create_write_transaction
    files = [stage(storage, "part-r3", ["a"])]

    def racing(self, *args, **kwargs):
        monkeypatch.setattr(DeltaTable, "create_write_transaction", real)
        assert commit(storage, files, "r3") == (1, True)  # the other retry of the same run
        raise CommitFailedError("version already exists")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", racing)
    assert commit(storage, files, "r3") == (1, False)  # re-checked inside the retry
    assert rows(storage) == 1  # committed once


def test_persistent_conflict_gives_up_after_the_attempts(storage, monkeypatch):
    def always(self, *args, **kwargs):
        raise CommitFailedError("conflict")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", always)
    monkeypatch.setattr(delta.time, "sleep", lambda s: None)
    with pytest.raises(CommitFailedError):
        commit(storage, [stage(storage, "p", ["a"])], "r4")
    assert rows(storage) == 0


def test_leftovers_are_cleaned_unless_the_txn_committed(storage):
    stage(storage, "part-bad", ["a"])
    keep = stage(storage, "part-other", ["b"])
    assert rows(storage) == 0  # staged files are invisible
    assert delta.discard_uncommitted(storage, PARTS, "part-bad", "bad") == 1
    assert not [n for n in storage.listdir(*PARTS) if n.startswith("part-bad")]
    assert delta.delete_staged(storage, PARTS, "part-other") == 1
    assert keep["path"] not in storage.listdir(*PARTS)
    done = [stage(storage, "part-ok", ["c"])]
    commit(storage, done, "ok")
    assert delta.discard_uncommitted(storage, PARTS, "part-ok", "ok") == 0  # they are data
    assert rows(storage) == 1


def test_txn_not_in_recent_history_is_an_error(storage, monkeypatch):
    files = [stage(storage, "part-old", ["a"])]
    commit(storage, files, "old")
    for _ in range(3):
        append_other(storage)
    monkeypatch.setattr(delta, "HISTORY_WINDOW", 2)
    with pytest.raises(StorageError) as e:
        commit(storage, files, "old")  # committed, but its commit is out of reach
    assert e.value.txn == "old" and e.value.table == "table 't'"
    assert "'old'" in str(e.value) and "table 't'" in str(e.value)
    assert rows(storage) == 4  # and nothing was committed again


def test_commit_to_a_missing_table(tmp_path):
    st = Storage(str(tmp_path / "empty"))
    with pytest.raises(NotFoundError):
        delta.commit_staged(st, PARTS, [], SCHEMA, txn_id="x", metadata={}, table="table 't'")


def test_find_commit_searches_growing_windows(storage):
    for _ in range(20):
        append_other(storage)
    dt = storage.open_delta(*PARTS)
    assert delta.find_commit(dt, lambda e: e["version"] == 0, None)["version"] == 0
    assert delta.find_commit(dt, lambda e: e["version"] == 0, 10) is None


def test_append_only_table_creates_fences_and_compacts(tmp_path):
    st = Storage(str(tmp_path / "root"))
    log = delta.AppendOnlyTable(st.uri("ev"), None, create_name="raymlp_ev", label="the log")
    assert log.open() is None and log.version() is None
    table = pa.table(
        {
            "seq": pa.array([1], pa.int64()),
            "ts": delta.ts_to_arrow([1.5]),
            "kind": ["k"],
            "payload": ["{}"],
        },
        schema=pa.schema([delta.SEQ_FIELD, delta.TS_FIELD, delta.KIND_FIELD, delta.PAYLOAD_FIELD]),
    )
    assert log.append(table) == 0
    assert log.append(table.set_column(0, "seq", pa.array([2], pa.int64())), expect_version=0) == 1
    other = delta.AppendOnlyTable(st.uri("ev"), None, create_name="raymlp_ev")
    other.append(table.set_column(0, "seq", pa.array([3], pa.int64())))
    with pytest.raises(delta.TableAdvancedError):
        log.append(table, expect_version=1)
    got = log.rows_after(log.snapshot(), 1)
    assert got["seq"].to_pylist() == [2, 3]
    assert delta.ts_from_arrow(got["ts"]) == [1.5, 1.5]
    log.compact(expect_version=2)
    assert len(log.snapshot().file_uris()) == 1
