"""The synthetic usage-event producer that feeds the stream job's default config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from raymlp.training.synthetic import churn_feature_tables, churn_usage_events, main


def test_events_have_the_usage_view_columns_and_unique_ids():
    now = datetime(2026, 11, 1, tzinfo=UTC)
    events = churn_usage_events(50, 200, seed=1, now=now)
    usage = churn_feature_tables(5, months=1)["customer_usage"]
    # Same columns and types as the customer_usage view's source, plus the event id.
    assert events.schema.remove(events.schema.get_field_index("event_id")) == usage.schema
    ids = events.column("event_id").to_pylist()
    assert len(set(ids)) == 200
    customers = set(events.column("customer_id").to_pylist())
    assert customers <= {f"c{i:06d}" for i in range(50)}
    ts = events.column("event_timestamp").to_pylist()
    assert all(now - timedelta(hours=1) < t <= now for t in ts)
    # Two calls never reuse an id (producers append batch after batch).
    again = churn_usage_events(50, 200, seed=1, now=now).column("event_id").to_pylist()
    assert not set(ids) & set(again)


def test_append_events_cli_adds_one_commit_per_call(tmp_path, capsys):
    path = str(tmp_path / "usage_events")
    assert main(["--append-events", path, "--events", "30", "--customers", "10"]) == 0
    assert main(["--append-events", path, "--events", "20", "--customers", "10"]) == 0
    table = DeltaTable(path)
    assert table.version() == 1  # two commits: versions 0 and 1
    assert table.to_pyarrow_table().num_rows == 50
    assert "appended 20 usage events" in capsys.readouterr().out


def test_append_events_cli_rejects_a_non_positive_count(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--append-events", str(tmp_path / "ev"), "--events", "0"])
    assert e.value.code == 2
    assert not (tmp_path / "ev").exists()


def test_events_timestamps_are_utc():
    events = churn_usage_events(3, 4, seed=0)
    assert events.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")


def test_tables_anchored_at_now_keep_the_newest_rows_inside_the_view_ttls():
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    tables = churn_feature_tables(40, months=3, seed=2, now=now)
    for view, ttl in (("customer_usage", timedelta(days=7)), ("customer_profile",
                                                              timedelta(days=30))):
        newest: dict[str, datetime] = {}
        t = tables[view]
        for cid, ts in zip(t.column("customer_id").to_pylist(),
                           t.column("event_timestamp").to_pylist()):
            newest[cid] = max(newest.get(cid, ts), ts)
        assert len(newest) == 40
        assert all(now - ttl < ts <= now for ts in newest.values()), view
    labels = tables["labels"].column("event_timestamp").to_pylist()
    assert max(labels) <= now and min(labels) >= now - timedelta(days=70)
