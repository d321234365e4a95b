"""Threat: rows dated in the future pin an entity, bad numbers pass (issue 13 item 6).

The issue: "an online row dated in the year 2100 pins that entity forever" (the online store
keeps the newest row per entity, so nothing written later would ever replace it), and "a
400-digit number in a float feature answered 503 instead of 422". Push and ingest refuse event
times beyond ``feature_store.max_future_skew`` and non-finite numbers with a ValidationError
naming the field, the value and the rule; the store is left exactly as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from raymlp.errors import ValidationError
from tests.security._features import (
    NOW,
    REPO,
    as_,
    auth_config,
    online,
    parquet_files,
    usage_rows,
)


@pytest.fixture
def platform_config(tmp_path):
    return auth_config(str(tmp_path / "root"), max_future_skew="5m")


@pytest.fixture
def alice(platform):
    a = as_(platform, "alice")
    a.features.apply(REPO)
    a.features.push("usage", usage_rows([("c1", 1, 10, 50.0)]))
    return a


def _with_time(table: pa.Table, when: datetime) -> pa.Table:
    i = table.schema.get_field_index("event_timestamp")
    return table.set_column(
        i, "event_timestamp", pa.array([when] * table.num_rows, pa.timestamp("us", tz="UTC"))
    )


def _state(p):
    return p.features.table_versions(["usage"]), parquet_files(p, "usage"), online(p, ["c1"])


def test_push_and_ingest_refuse_rows_dated_in_the_future(alice):
    before = _state(alice)
    assert before[2] == [("c1", 10, "present")]
    year_2100 = datetime(2100, 1, 1, tzinfo=UTC)
    pinned = _with_time(usage_rows([("c1", 0, 999, 1.0)]), year_2100)
    for write in (alice.features.push, alice.features.ingest):
        with pytest.raises(ValidationError) as err:
            write("usage", pinned)
        e = err.value
        assert e.field == "event_timestamp" and e.value.startswith("2100-01-01")
        assert e.rule == "event time <= now + max_future_skew" and "max_future_skew" in e.message
        assert _state(alice) == before  # no commit, no data file, online value untouched
    # Just beyond the skew is refused too; within it is accepted.
    beyond = _with_time(
        usage_rows([("c1", 0, 7, 1.0)]), datetime.now(UTC) + timedelta(minutes=30)
    )
    with pytest.raises(ValidationError):
        alice.features.push("usage", beyond)
    # The entity is not pinned: a row of "now" replaces the old value.
    alice.features.push("usage", _with_time(usage_rows([("c1", 0, 11, 1.0)]), datetime.now(UTC)))
    assert online(alice, ["c1"]) == [("c1", 11, "present")]


def test_push_refuses_non_finite_and_overflowing_numbers(alice):
    before = _state(alice)
    bad_rows = {
        "nan": {"minutes": float("nan")},
        "infinity": {"minutes": float("inf")},
        "400 digits": {"minutes": 10**400},
        "int overflow": {"calls": 10**30},
    }
    for what, patch in bad_rows.items():
        row = {"customer_id": "c1", "event_timestamp": NOW, "calls": 1, "minutes": 1.0, **patch}
        with pytest.raises(ValidationError) as err:
            alice.features.push("usage", [row])
        e = err.value
        assert e.http_status == 422 and "rule" in e.context, what
        assert e.field == next(iter(patch)), what  # the bad column is named
        assert _state(alice) == before, what
