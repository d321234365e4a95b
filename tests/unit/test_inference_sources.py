"""Events sources: tailing a real Delta table by its log, replay from offsets, adapters."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from raymlp.config import StreamSourceConfig
from raymlp.errors import NotFoundError, StorageError, ValidationError
from raymlp.inference.sources import EVENT_ID, DeltaTableSource, EventSource, load_source

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def events(ids: range) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"e{i}" for i in ids],
            "customer_id": [f"c{i % 3}" for i in ids],
            "event_timestamp": pa.array(
                [T0 + timedelta(minutes=i) for i in ids], pa.timestamp("us", tz="UTC")
            ),
            "calls": pa.array(list(ids), pa.int64()),
        }
    )


@pytest.fixture
def table(tmp_path):
    path = str(tmp_path / "events")
    write_deltalake(path, events(range(0, 3)))  # version 0
    write_deltalake(path, events(range(3, 5)), mode="append")  # version 1
    return path


def test_poll_from_start_then_incrementally(table):
    src = DeltaTableSource(table, max_records=100)
    batch, offset = src.poll(None)
    assert offset == 1
    assert sorted(batch.column("event_id").to_pylist()) == [f"e{i}" for i in range(5)]
    assert EVENT_ID in batch.column_names
    again, same = src.poll(offset)
    assert again.num_rows == 0 and same == 1  # nothing new: same offset
    write_deltalake(table, events(range(5, 7)), mode="append")  # version 2
    batch, offset = src.poll(1)
    assert offset == 2
    assert batch.column("event_id").to_pylist() == ["e5", "e6"]


def test_replay_from_an_offset_is_identical(table):
    src = DeltaTableSource(table, max_records=100)
    a, _ = src.poll(0)
    b, _ = DeltaTableSource(table).poll(0)
    assert a.equals(b)
    assert a.column(EVENT_ID).to_pylist() == ["1:0:0", "1:0:1"]  # <version>:<file>:<row>


def test_max_records_splits_on_whole_commits(table):
    write_deltalake(table, events(range(5, 9)), mode="append")  # version 2
    src = DeltaTableSource(table, max_records=2)
    first, o1 = src.poll(None)
    assert (first.num_rows, o1) == (3, 0)  # one commit even if it exceeds max_records
    second, o2 = src.poll(o1)
    assert (second.num_rows, o2) == (2, 1)
    third, o3 = src.poll(o2)
    assert (third.num_rows, o3) == (4, 2)


def test_start_version_skips_history(table):
    batch, offset = DeltaTableSource(table, start_version=1).poll(None)
    assert batch.column("event_id").to_pylist() == ["e3", "e4"] and offset == 1


def test_compaction_does_not_replay_events(table):
    src = DeltaTableSource(table)
    _, offset = src.poll(None)
    DeltaTable(table).optimize.compact()  # rewrites files: dataChange false
    write_deltalake(table, events(range(5, 6)), mode="append")
    batch, new = src.poll(offset)
    assert new == DeltaTable(table).version()
    assert batch.column("event_id").to_pylist() == ["e5"]


def test_added_columns_read_as_null_in_older_files(table):
    more = events(range(5, 6)).append_column("plan", pa.array(["gold"]))
    write_deltalake(table, more, mode="append", schema_mode="merge")
    batch, _ = DeltaTableSource(table).poll(None)
    plans = dict(zip(batch.column("event_id").to_pylist(), batch.column("plan").to_pylist()))
    assert plans["e0"] is None and plans["e5"] == "gold"


def test_a_cleaned_up_log_entry_is_a_clear_error(tmp_path):
    path = str(tmp_path / "ev")
    for i in range(3):
        write_deltalake(path, events(range(i, i + 1)), mode="append")
    DeltaTable(path).create_checkpoint()  # at version 2
    os.remove(os.path.join(path, "_delta_log", f"{1:020d}.json"))  # as log cleanup does
    src = DeltaTableSource(path)
    with pytest.raises(StorageError) as e:
        src.poll(0)
    assert "version 1 is gone" in str(e.value)
    assert src.poll(1)[0].column("event_id").to_pylist() == ["e2"]  # newer entries still read


def test_bad_offset_and_missing_table(tmp_path, table):
    with pytest.raises(ValidationError) as e:
        DeltaTableSource(table).poll({"p0": 3})
    assert e.value.field == "offset"
    with pytest.raises(NotFoundError):
        DeltaTableSource(str(tmp_path / "nope")).poll(None)


class ListSource(EventSource):
    """A replayable in-memory bus: offsets are list positions."""

    def __init__(self, rows: list[dict], max_records: int = 2) -> None:
        self.rows, self.max_records = rows, max_records

    def poll(self, after_offset):
        start = 0 if after_offset is None else after_offset
        part = self.rows[start : start + self.max_records]
        return pa.Table.from_pylist(part) if part else None, start + len(part)


def test_load_source_builds_delta_and_adapters(table):
    src = load_source(StreamSourceConfig(path=table, max_records=7, start_version=1))
    assert isinstance(src, DeltaTableSource) and src.max_records == 7 and src.start_version == 1
    cfg = StreamSourceConfig(
        kind="adapter",
        adapter=f"{__name__}:ListSource",
        options={"rows": [{"a": 1}, {"a": 2}, {"a": 3}]},
        max_records=2,
    )
    bus = load_source(cfg)
    batch, off = bus.poll(None)
    assert batch.column("a").to_pylist() == [1, 2] and off == 2
    assert bus.poll(off)[0].column("a").to_pylist() == [3]


@pytest.mark.parametrize("adapter", ["no_such_module_x:Foo", "raymlp.errors:RayMLPError"])
def test_load_source_refuses_bad_adapters(adapter):
    with pytest.raises(ValidationError) as e:
        load_source(StreamSourceConfig(kind="adapter", adapter=adapter))
    assert e.value.field == "source.adapter"
