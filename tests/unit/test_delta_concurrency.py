"""Two writers on one append-only Delta table (a registry split brain), without Ray.

A fenced append is committed with Delta's own optimistic concurrency (no commit retry), so a
writer whose snapshot went stale between its version check and its commit fails with
TableAdvancedError and writes nothing, instead of being rebased onto the other writer's commit
(the same event seq twice: a forked history). The seams below make the other writer commit in
exactly that window.
"""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from raymlp._private import delta
from raymlp.config import PlatformConfig
from raymlp.errors import ConflictError, StorageError, error_for_code
from raymlp.registry.eventlog import EventLog, LogAdvancedError
from raymlp.registry.events import Event
from raymlp.registry.service import RegistryService
from raymlp.storage import Storage

SCHEMA = pa.schema([delta.SEQ_FIELD, delta.TS_FIELD, delta.KIND_FIELD, delta.PAYLOAD_FIELD])
SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}
ALICE = {"name": "alice"}


def _rows(seq: int, writer: str) -> pa.Table:
    return pa.table(
        {
            "seq": pa.array([seq], pa.int64()),
            "ts": delta.ts_to_arrow([1.0]),
            "kind": [writer],
            "payload": ["{}"],
        },
        schema=SCHEMA,
    )


def _table(uri: str) -> delta.AppendOnlyTable:
    return delta.AppendOnlyTable(uri, None, create_name="raymlp_ev", label="the log")


def _raw(uri: str) -> list[tuple[int, str]]:
    """Every row of the Delta table as (seq, kind), duplicates included (no de-duplication)."""
    t = DeltaTable(uri).to_pyarrow_table(columns=["seq", "kind"]).sort_by("seq")
    return list(zip(t["seq"].to_pylist(), t["kind"].to_pylist(), strict=True))


def _commit_in_the_window(monkeypatch, handle: delta.AppendOnlyTable, other_commit) -> None:
    """Make ``other_commit`` run once, right after ``handle`` passed its next version check and
    before its own commit: the race that a check-then-append cannot see."""
    real = handle._fence
    fired = []

    def fence_then_race(dt, expect_version):
        real(dt, expect_version)
        if not fired:
            fired.append(True)
            other_commit()

    monkeypatch.setattr(handle, "_fence", fence_then_race)


def test_a_commit_from_a_stale_snapshot_fails_and_writes_nothing(tmp_path, monkeypatch):
    uri = Storage(str(tmp_path)).uri("ev")
    a, b = _table(uri), _table(uri)
    assert a.append(_rows(1, "a"), expect_version=delta.NO_TABLE) == 0
    assert b.version() == 0  # both handles at version 0
    _commit_in_the_window(monkeypatch, b, lambda: a.append(_rows(2, "a"), expect_version=0))
    with pytest.raises(delta.TableAdvancedError):
        b.append(_rows(2, "b"), expect_version=0)
    assert _raw(uri) == [(1, "a"), (2, "a")]
    assert DeltaTable(uri).version() == 1
    # b catches up and its next fenced append commits after a's
    monkeypatch.undo()
    assert b.append(_rows(3, "b"), expect_version=1) == 2
    assert _raw(uri) == [(1, "a"), (2, "a"), (3, "b")]


def test_an_unfenced_append_still_lands_after_a_concurrent_commit(tmp_path, monkeypatch):
    # Logs without a seq (prediction logs, monitor tables) keep Delta's blind-append retry.
    uri = Storage(str(tmp_path)).uri("ev")
    a, b = _table(uri), _table(uri)
    a.append(_rows(1, "a"))
    assert b.version() == 0
    a.append(_rows(2, "a"))
    assert b.append(_rows(3, "b")) == 2  # b's stale handle (version 0) was rebased
    assert [s for s, _ in _raw(uri)] == [1, 2, 3]


def test_two_creators_of_one_table_one_wins(tmp_path, monkeypatch):
    uri = Storage(str(tmp_path)).uri("ev")
    a, b = _table(uri), _table(uri)
    assert b.open() is None
    # b saw no table; a creates it before b's first commit
    monkeypatch.setattr(b, "open", lambda: None)
    a.append(_rows(1, "a"), expect_version=delta.NO_TABLE)
    with pytest.raises(delta.TableAdvancedError):
        b.append(_rows(1, "b"), expect_version=delta.NO_TABLE)
    assert _raw(uri) == [(1, "a")]
    # a table expected but gone is not silently re-created
    gone = Storage(str(tmp_path)).uri("gone")
    with pytest.raises(delta.TableAdvancedError):
        _table(gone).append(_rows(5, "a"), expect_version=3)
    assert Storage(str(tmp_path)).open_delta("gone") is None


def test_a_fenced_compaction_fails_when_an_append_lands_meanwhile(tmp_path, monkeypatch):
    uri = Storage(str(tmp_path)).uri("ev")
    a, b = _table(uri), _table(uri)
    for seq in (1, 2, 3):
        a.append(_rows(seq, "a"), expect_version=delta.NO_TABLE if seq == 1 else seq - 2)
    assert b.version() == 2
    _commit_in_the_window(monkeypatch, a, lambda: b.append(_rows(4, "b"), expect_version=2))
    # deltalake rebases the OPTIMIZE over b's append: a's handle then holds a commit it never
    # read, so the compaction reports that the table moved
    with pytest.raises(delta.TableAdvancedError):
        a.compact(expect_version=2)
    assert [s for s, _ in _raw(uri)] == [1, 2, 3, 4]
    monkeypatch.undo()
    with pytest.raises(delta.TableAdvancedError):
        a.append(_rows(4, "a"), expect_version=2)
    assert [s for s, _ in _raw(uri)] == [1, 2, 3, 4]
    # alone, a fenced compaction passes and returns the version after its own commit
    v = DeltaTable(uri).version()
    assert a.compact(expect_version=v)["numFilesRemoved"] >= 2
    assert a.version() == v + 1


def test_an_event_log_compacting_under_another_writer_does_not_skip_its_events(
    tmp_path, monkeypatch
):
    storage = Storage(str(tmp_path))
    a, b = EventLog(storage), EventLog(storage)
    for seq in (1, 2, 3):
        a.append([_event(seq, "a")])
    b.read_all()
    _commit_in_the_window(monkeypatch, a._table, lambda: b.append([_event(4, "b")]))
    with pytest.raises(LogAdvancedError):
        a.compact()
    monkeypatch.undo()
    with pytest.raises(LogAdvancedError):  # a has not read seq 4: it may not write seq 4
        a.append([_event(4, "a")])
    assert [e.principal for e in a.read_after(3)] == ["b"]
    a.append([_event(5, "a")])
    assert [s for s, _ in _raw(storage.uri("registry", "events"))] == [1, 2, 3, 4, 5]


def _event(seq: int, writer: str) -> Event:
    return Event(kind="test", entity=f"w:{writer}", principal=writer, tenant="t", seq=seq)


def test_event_logs_racing_on_one_seq_never_fork(tmp_path):
    storage = Storage(str(tmp_path))
    logs = {"a": EventLog(storage), "b": EventLog(storage)}
    target = 30
    barrier = threading.Barrier(2)
    stats = {"a": [0, 0], "b": [0, 0]}  # commits, conflicts
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        log = logs[name]
        try:
            barrier.wait()
            last = 0
            while last < target:
                seen = log.read_after(last)
                last = seen[-1].seq if seen else last
                if last >= target:
                    return
                try:
                    log.append([_event(last + 1, name)])
                except LogAdvancedError:
                    stats[name][1] += 1
                    continue
                stats[name][0] += 1
                last += 1
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    seqs = [s for s, _ in _raw(storage.uri("registry", "events"))]
    assert seqs == list(range(1, target + 1)), stats  # no seq twice, none missing
    assert stats["a"][0] + stats["b"][0] == target
    assert [e.seq for e in EventLog(storage).read_all()] == seqs


# -- the registry on top of it --------------------------------------------------------------


def _svc(root) -> RegistryService:
    cfg = PlatformConfig.model_validate({"storage": {"root": str(root)}})
    return RegistryService(cfg, Storage(str(root)))


def _register(svc: RegistryService, name: str = "churn") -> int:
    return svc.execute(ALICE, "register", {"name": name, "staged_path": None, "signature": SIG})


def _log_seqs(root) -> list[int]:
    return [s for s, _ in _raw(Storage(str(root)).uri("registry", "events"))]


def test_a_registry_losing_the_commit_race_catches_up_and_replans(tmp_path, monkeypatch):
    a, b = _svc(tmp_path), _svc(tmp_path)
    assert _register(a) == 1
    b.apply(b.catch_up_events())
    # a registers version 2 in the moment between b's check and b's commit
    _commit_in_the_window(monkeypatch, b.log._table, lambda: _register(a))
    assert _register(b) == 3  # b's first try lost, it caught up and re-planned
    assert _log_seqs(tmp_path) == [1, 2, 3, 4]  # model_created, 3 x version_registered
    assert b.state.models["churn"].next_version == 4
    monkeypatch.undo()
    assert _register(a) == 4  # a catches up on b's commit the same way
    assert _log_seqs(tmp_path) == [1, 2, 3, 4, 5]


def test_a_lost_race_on_an_alias_precondition_is_a_conflict(tmp_path, monkeypatch):
    a, b = _svc(tmp_path), _svc(tmp_path)
    _register(a), _register(a)
    a.execute(ALICE, "promote", {"name": "churn", "version": 1, "alias": "canary"})
    b.apply(b.catch_up_events())
    seqs = _log_seqs(tmp_path)

    def a_moves_it():
        a.execute(ALICE, "promote", {"name": "churn", "version": 2, "alias": "canary"})

    _commit_in_the_window(monkeypatch, b.log._table, a_moves_it)
    with pytest.raises(ConflictError):
        b.execute(
            ALICE,
            "promote",
            {"name": "churn", "version": 2, "alias": "canary", "expected_version": 1},
        )
    assert len(_log_seqs(tmp_path)) == len(seqs) + 1  # a's move only
    assert b.state.models["churn"].aliases["canary"] == 2  # b caught up on it


def test_state_changes_only_after_the_append_is_durable(tmp_path, monkeypatch):
    svc = _svc(tmp_path)
    _register(svc)
    before = (svc.state.last_seq, dict(svc.state.models["churn"].aliases), len(svc.recent))

    def broken_write(dt, data):
        raise OSError("disk full")

    monkeypatch.setattr(svc.log._table, "_commit_fenced", broken_write)
    with pytest.raises(StorageError):
        svc.execute(ALICE, "promote", {"name": "churn", "version": 1, "alias": "canary"}, "op-1")
    after = (svc.state.last_seq, dict(svc.state.models["churn"].aliases), len(svc.recent))
    assert after == before
    assert "op-1" not in svc.state.op_results
    monkeypatch.undo()
    res = svc.execute(ALICE, "promote", {"name": "churn", "version": 1, "alias": "canary"}, "op-1")
    assert res["version"] == 1 and svc.state.models["churn"].aliases["canary"] == 1
    assert _log_seqs(tmp_path) == list(range(1, svc.state.last_seq + 1))


def _race_every_time(monkeypatch, handle: delta.AppendOnlyTable, other_commit) -> list[int]:
    """Like :func:`_commit_in_the_window`, at every commit of ``handle``: it loses each race."""
    real = handle._fence
    fired: list[int] = []

    def fence_then_race(dt, expect_version):
        real(dt, expect_version)
        fired.append(expect_version)
        other_commit()

    monkeypatch.setattr(handle, "_fence", fence_then_race)
    return fired


def test_a_command_losing_every_race_is_a_conflict_that_crosses_the_actor_boundary(
    tmp_path, monkeypatch
):
    a, b = _svc(tmp_path), _svc(tmp_path)
    assert _register(a) == 1
    b.apply(b.catch_up_events())
    fired = _race_every_time(monkeypatch, b.log._table, lambda: _register(a))
    with pytest.raises(ConflictError) as info:
        _register(b)
    err = info.value
    assert len(fired) == 3
    assert err.context == {
        "entity": "model:churn/4",  # what b last planned, on the version it last read
        "op": "register",
        "expected_version": fired[-1],
        "attempts": 3,
        "rule": "fenced_log_append",
    }
    assert "expected version" in err.message and "-1" not in err.message
    # the error an SDK caller gets from the actor: pickled whole, answered as 409 conflict
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ConflictError and back.context == err.context
    assert back.http_status == 409 and back.to_dict()["error"]["code"] == "conflict"
    assert error_for_code("conflict") is ConflictError
    assert _log_seqs(tmp_path) == list(range(1, 6))  # a's commits only, none of b's


def _unreferenced_parquet(uri: str) -> set[str]:
    """Parquet files in the table directory that no ``_delta_log`` entry adds."""
    log = Path(uri) / "_delta_log"
    referenced = set()
    for entry in log.glob("*.json"):
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                referenced.add(action["add"]["path"])
    on_disk = {p.relative_to(uri).as_posix() for p in Path(uri).rglob("*.parquet")}
    return on_disk - referenced


def test_a_lost_race_leaves_no_orphan_data_file(tmp_path, monkeypatch):
    uri = Storage(str(tmp_path)).uri("ev")
    a, b = _table(uri), _table(uri)
    a.append(_rows(1, "a"), expect_version=delta.NO_TABLE)
    b.open()
    _commit_in_the_window(monkeypatch, b, lambda: a.append(_rows(2, "a"), expect_version=0))
    with pytest.raises(delta.TableAdvancedError):
        b.append(_rows(2, "b"), expect_version=0)
    assert _unreferenced_parquet(uri) == set()
    assert len(list(Path(uri).glob("*.parquet"))) == 2  # a's two commits kept
    assert _raw(uri) == [(1, "a"), (2, "a")]


def test_a_lost_create_race_leaves_no_orphan_data_file(tmp_path, monkeypatch):
    uri = Storage(str(tmp_path)).uri("ev")
    a, b = _table(uri), _table(uri)
    real = delta.create_table_with_add_actions

    def a_creates_first(*args, **kwargs):
        monkeypatch.setattr(delta, "create_table_with_add_actions", real)
        a.append(_rows(1, "a"), expect_version=delta.NO_TABLE)
        return real(*args, **kwargs)

    assert b.open() is None  # b sees no table yet
    monkeypatch.setattr(delta, "create_table_with_add_actions", a_creates_first)
    with pytest.raises(delta.TableAdvancedError, match="created by another writer"):
        b.append(_rows(1, "b"), expect_version=delta.NO_TABLE)
    assert _unreferenced_parquet(uri) == set()
    assert _raw(uri) == [(1, "a")]


def test_the_cleanup_never_removes_a_file_the_log_references(tmp_path):
    uri = Storage(str(tmp_path)).uri("ev")
    t = _table(uri)
    t.append(_rows(1, "a"), expect_version=delta.NO_TABLE)
    (name,) = [p.name for p in Path(uri).glob("*.parquet")]
    t._discard_lost(t._filesystem(), name)  # "lost", yet committed (an ambiguous failure)
    assert (Path(uri) / name).exists()
    assert _raw(uri) == [(1, "a")]


def test_a_fence_on_an_empty_log_reads_naturally(tmp_path):
    uri = Storage(str(tmp_path)).uri("ev")
    a, b = _table(uri), _table(uri)
    a.append(_rows(1, "a"), expect_version=delta.NO_TABLE)
    b._dt = DeltaTable(uri)  # a handle, while b's caller still believes the log empty
    with pytest.raises(delta.TableAdvancedError) as info:
        b.append(_rows(1, "b"), expect_version=delta.NO_TABLE)
    assert str(info.value) == "the log at version 0, expected no table yet (an empty log)"
    with pytest.raises(delta.TableAdvancedError, match=r"at version 0, expected version 3$"):
        b.append(_rows(1, "b"), expect_version=3)
