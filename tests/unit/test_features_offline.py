"""Delta offline store: create/evolve/replace, idempotent file commits, appends, time travel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from raymlp.config import FeatureField, FeatureView
from raymlp.errors import NotFoundError
from raymlp.features import offline
from raymlp.features.ingest import with_seq
from raymlp.features.validation import conform
from raymlp.storage import Storage

KEYS = [("customer_id", "string")]
NOW = datetime(2024, 5, 1, tzinfo=UTC)


def view(*features: tuple[str, str]) -> FeatureView:
    feats = features or (("tenure", "int64"),)
    return FeatureView(
        name="profile",
        entities=["customer"],
        features=[FeatureField(name=n, dtype=t) for n, t in feats],
    )


def rows(v: FeatureView, keys: list[str], days: list[float], first_seq: int) -> pa.Table:
    data = {"customer_id": keys, "event_timestamp": [NOW - timedelta(days=d) for d in days]}
    for f in v.features:
        data[f.name] = pa.array(range(len(keys)), pa.int64()).cast(
            {"int64": pa.int64(), "string": pa.string()}.get(f.dtype, pa.int64())
        )
    return with_seq(conform(pa.table(data), v, KEYS), first_seq, 2)


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(str(tmp_path))


def test_create_add_columns_and_replace(storage):
    v = view()
    assert offline.ensure_table(storage, v, KEYS, "create") == 0
    assert offline.ensure_table(storage, v, KEYS, "create") == 0  # idempotent
    assert offline.table_columns(storage, "profile") == {
        "customer_id": "string",
        "event_timestamp": "timestamp",
        "_seq": "int64",
        "tenure": "int64",
    }
    v2 = view(("tenure", "int64"), ("plan", "string"))
    assert offline.ensure_table(storage, v2, KEYS, "add_columns") == 1
    assert "plan" in offline.table_columns(storage, "profile")
    offline.append(storage, "profile", rows(v2, ["a"], [1], 1))
    v3 = view(("tenure", "string"))
    assert offline.ensure_table(storage, v3, KEYS, "replace") == 3
    assert offline.table_columns(storage, "profile")["tenure"] == "string"
    assert offline.table_info(storage, "profile", "event_timestamp")["num_rows"] == 0
    # Time travel still reads the replaced data.
    _, files = offline.file_uris(storage, "profile", 2)
    assert len(files) == 1


def test_commit_files_is_one_atomic_idempotent_commit(storage):
    v = view()
    offline.ensure_table(storage, v, KEYS, "create")
    f1 = offline.write_data_file(
        storage, "profile", rows(v, ["a", "b"], [3, 2], 10), "part-t1", "event_timestamp"
    )
    f2 = offline.write_data_file(
        storage, "profile", rows(v, ["c"], [1], 20), "part-t1", "event_timestamp"
    )
    version, now = offline.commit_files(storage, "profile", [f1, f2], txn_id="t1")
    assert (version, now) == (1, True)
    again = offline.commit_files(storage, "profile", [f1, f2], txn_id="t1")
    assert again == (1, False)  # the retried commit wrote nothing
    info = offline.table_info(storage, "profile", "event_timestamp")
    assert info["version"] == 1 and info["num_rows"] == 3 and info["num_files"] == 2
    assert info["last_event_time"] >= NOW - timedelta(days=1, seconds=1)
    assert info["first_event_time"] <= NOW - timedelta(days=3) + timedelta(seconds=1)


def test_uncommitted_files_are_invisible_and_deletable(storage):
    v = view()
    offline.ensure_table(storage, v, KEYS, "create")
    offline.write_data_file(
        storage, "profile", rows(v, ["a"], [1], 1), "part-bad", "event_timestamp"
    )
    assert offline.table_info(storage, "profile", "event_timestamp")["num_rows"] == 0
    assert offline.delete_files(storage, "profile", "part-bad") == 1
    assert [n for n in storage.listdir("features", "profile") if n.endswith(".parquet")] == []


def test_files_since_and_read_files_with_schema_evolution(storage):
    v = view()
    offline.ensure_table(storage, v, KEYS, "create")
    offline.append(storage, "profile", rows(v, ["a"], [1], 1))
    v2 = view(("tenure", "int64"), ("extra", "int64"))
    offline.ensure_table(storage, v2, KEYS, "add_columns")
    latest = offline.append(storage, "profile", rows(v2, ["b"], [1], 2))
    assert latest == 3
    version, new = offline.files_since(storage, "profile", 1)
    assert version == 3 and len(new) == 1
    assert offline.files_since(storage, "profile", 3) == (3, [])
    _, all_files = offline.file_uris(storage, "profile")
    import pyarrow as pa_

    schema = pa_.schema(offline.open_table(storage, "profile").schema().to_arrow())
    t = offline.read_files(storage, all_files, schema, ["customer_id", "extra"])
    assert sorted(t.to_pylist(), key=lambda r: r["customer_id"]) == [
        {"customer_id": "a", "extra": None},
        {"customer_id": "b", "extra": 0},
    ]


def test_missing_tables_and_versions(storage):
    assert offline.open_table(storage, "nope") is None
    with pytest.raises(NotFoundError):
        offline.file_uris(storage, "nope")
    offline.ensure_table(storage, view(), KEYS, "create")
    with pytest.raises(NotFoundError):
        offline.file_uris(storage, "profile", 42)
