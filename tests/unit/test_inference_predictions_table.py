"""Predictions tables: fenced stream appends, idempotent batch commits, lineage in the log."""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pytest

from raymlp.errors import ConflictError, NotFoundError, SchemaError
from raymlp.inference import predictions_table as ptable
from raymlp.storage import Storage


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(str(tmp_path / "root"))


def rows(ids: list[str], p: float = 0.5) -> pa.Table:
    return pa.table({"event_id": ids, "probability": pa.array([p] * len(ids), pa.float64())})


def test_append_records_batch_and_offset_atomically(storage):
    assert ptable.app_version(storage, "s", "app") == (None, {})
    ptable.append(storage, "s", rows(["a"]), app_id="app", batch=1, metadata={"raymlp.offset": "3"})
    ptable.append(
        storage, "s", rows(["b", "c"]), app_id="app", batch=2, metadata={"raymlp.offset": "5"}
    )
    batch, meta = ptable.app_version(storage, "s", "app")
    assert batch == 2 and meta["raymlp.offset"] == "5" and meta["raymlp.batch"] == "2"
    assert sorted(ptable.read(storage, "s").column("event_id").to_pylist()) == ["a", "b", "c"]
    assert ptable.app_version(storage, "s", "other") == (None, {})


def test_append_is_fenced_on_the_batch_number(storage):
    ptable.append(storage, "s", rows(["a"]), app_id="app", batch=1, metadata={})
    for wrong in (1, 3):  # a replayed batch, a gap
        with pytest.raises(ConflictError):
            ptable.append(storage, "s", rows(["x"]), app_id="app", batch=wrong, metadata={})
    assert ptable.read(storage, "s").num_rows == 1  # nothing was written by the refused ones


def test_concurrent_writers_of_one_batch_commit_once(storage):
    ptable.append(storage, "s", rows(["a"]), app_id="app", batch=1, metadata={})
    results: list[str] = []
    barrier = threading.Barrier(4)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            ptable.append(storage, "s", rows([f"w{i}"]), app_id="app", batch=2, metadata={})
            results.append("ok")
        except ConflictError:
            results.append("conflict")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("conflict") == 3
    assert ptable.read(storage, "s").num_rows == 2


def test_changed_column_type_is_refused(storage):
    ptable.append(storage, "s", rows(["a"]), app_id="app", batch=1, metadata={})
    bad = pa.table({"event_id": ["b"], "probability": ["high"]})
    with pytest.raises(SchemaError) as e:
        ptable.append(storage, "s", bad, app_id="app", batch=2, metadata={})
    assert e.value.column == "probability"
    assert ptable.app_version(storage, "s", "app")[0] == 1


def test_new_columns_are_added(storage):
    ptable.append(storage, "s", rows(["a"]), app_id="app", batch=1, metadata={})
    more = rows(["b"]).append_column("route", pa.array(["canary"]))
    ptable.append(storage, "s", more, app_id="app", batch=2, metadata={})
    routes = ptable.read(storage, "s").sort_by("event_id").column("route").to_pylist()
    assert routes == [None, "canary"]


def test_commit_files_is_idempotent_and_carries_lineage(storage):
    files = [
        ptable.write_file(storage, "b", rows([f"r{i}", f"s{i}"]), "part-run1") for i in range(2)
    ]
    assert ptable.write_file(storage, "b", rows([]), "part-run1") is None
    lineage = {"model": {"name": "m", "version": 3}, "rows": 4}
    meta = {ptable.LINEAGE_KEY: json.dumps(lineage), "raymlp.rows": "4"}
    v1 = ptable.commit_files(storage, "b", files, txn_id="run1", metadata=meta)
    v2 = ptable.commit_files(storage, "b", files, txn_id="run1", metadata=meta)  # a retry
    assert v1 == v2
    assert ptable.read(storage, "b").num_rows == 4
    runs = [h for h in ptable.history(storage, "b") if h["lineage"]]
    assert len(runs) == 1
    assert runs[0]["lineage"] == lineage and runs[0]["rows"] == 4 and runs[0]["version"] == v1


def test_delete_files_removes_only_the_run(storage):
    ptable.write_file(storage, "b", rows(["a"]), "part-run1")
    keep = ptable.write_file(storage, "b", rows(["b"]), "part-run2")
    assert ptable.delete_files(storage, "b", "part-run1") == 1
    assert storage.listdir("predictions", "b") == [keep["path"]]


def test_missing_table(storage):
    with pytest.raises(NotFoundError):
        ptable.history(storage, "nope")
    with pytest.raises(NotFoundError):
        ptable.read(storage, "nope")
    assert ptable.open_table(storage, "nope") is None
