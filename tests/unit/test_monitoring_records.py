"""The prediction/feedback record contract and the Delta tables of the monitor."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from raymlp.errors import ValidationError
from raymlp.monitoring.logtable import DeltaLog, EventTable, GroupCommitter
from raymlp.monitoring.records import (
    FEEDBACK_SCHEMA,
    PREDICTION_SCHEMA,
    feedback_to_table,
    normalize_feedback,
    normalize_prediction,
    normalize_predictions,
    predictions_to_table,
    table_to_feedback,
    table_to_predictions,
)
from raymlp.storage import Storage
from tests._wait import wait_for


def _rec(**kw):
    base = {
        "request_id": "r1",
        "model": "churn",
        "version": 2,
        "route": "canary",
        "tenant": "acme",
        "features": {"x": 1.5, "c": "a"},
        "prediction": "yes",
        "probability": 0.8,
        "latency_ms": 3.5,
        "ts": 1_700_000_000.25,
    }
    base.update(kw)
    return base


def test_normalize_fills_defaults():
    r = normalize_prediction({"request_id": "r", "model": "m"}, now=5.0)
    assert r["route"] == "primary" and r["tenant"] == "default" and r["status"] == "ok"
    assert r["ts"] == 5.0 and r["features"] == {} and r["version"] is None
    assert (
        normalize_prediction({"request_id": "r", "model": "m", "error_code": "timeout"})["status"]
        == "error"
    )


def test_timestamps_accept_iso_and_datetime():
    iso = normalize_prediction(_rec(ts="2024-01-02T03:04:05Z"))["ts"]
    dt = normalize_prediction(_rec(ts=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)))["ts"]
    assert iso == dt == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "field,value,rule",
    [
        ("route", "sideways", "primary|canary"),
        ("probability", 1.5, "[0, 1]"),
        ("version", -1, "integer >= 0"),
        ("version", True, "integer >= 0"),
        ("latency_ms", -2, ">= 0"),
        ("features", [1, 2], "dict"),
        ("status", "meh", "ok|error"),
        ("request_id", "", "non-empty"),
        ("ts", "yesterday", "ISO-8601"),
    ],
)
def test_bad_fields_are_named_with_the_rule(field, value, rule):
    with pytest.raises(ValidationError) as ei:
        normalize_prediction(_rec(**{field: value}))
    assert ei.value.field == f"record.{field}"
    assert rule in str(ei.value)


def test_unknown_keys_are_rejected():
    with pytest.raises(ValidationError, match="unknown field"):
        normalize_prediction(_rec(latency=3))


def test_a_batch_is_all_or_nothing_and_names_the_index():
    with pytest.raises(ValidationError) as ei:
        normalize_predictions([_rec(), _rec(route="x")])
    assert ei.value.field == "records[1].route"
    with pytest.raises(ValidationError, match="list"):
        normalize_predictions({"request_id": "r"})


def test_feedback_needs_a_label():
    assert normalize_feedback({"request_id": "r", "label": 0}, now=1.0)["label"] == 0
    with pytest.raises(ValidationError, match="label"):
        normalize_feedback({"request_id": "r", "label": None})
    with pytest.raises(ValidationError, match="label"):
        normalize_feedback({"request_id": "r", "label": [1]})


def test_tables_round_trip():
    recs = normalize_predictions(
        [
            _rec(),
            _rec(
                request_id="r2",
                version=None,
                prediction=None,
                probability=None,
                error_code="timeout",
            ),
        ]
    )
    table = predictions_to_table(recs, source="gateway")
    assert table.schema == PREDICTION_SCHEMA
    assert table["date"].to_pylist() == ["2023-11-14", "2023-11-14"]
    back = table_to_predictions(table)
    assert back == recs
    fb = [normalize_feedback({"request_id": "r1", "label": True, "ts": 10.0})]
    ft = feedback_to_table(fb)
    assert ft.schema == FEEDBACK_SCHEMA
    assert table_to_feedback(ft) == fb


def test_delta_log_appends_and_filters_by_time_and_model(tmp_path):
    st = Storage(str(tmp_path))
    log = DeltaLog(st, "prediction_log", PREDICTION_SCHEMA, ["date"], compact_every=10)
    assert log.read().num_rows == 0
    now = time.time()
    for i in range(12):  # crosses compact_every: compaction + checkpoint happen on the way
        log.append(
            predictions_to_table(
                normalize_predictions(
                    [_rec(request_id=f"r{i}", model="a" if i % 2 else "b", ts=now - 100 + i)]
                )
            )
        )
    assert log.read().num_rows == 12
    assert log.read(start_ts=now - 95).num_rows == 7
    assert log.read(start_ts=now - 95, end_ts=now - 90).num_rows == 5
    assert set(log.read(model="a")["model"].to_pylist()) == {"a"}
    assert log.read()["ts"].to_pylist() == sorted(log.read()["ts"].to_pylist())


def test_event_table_assigns_increasing_seq_across_instances(tmp_path):
    st = Storage(str(tmp_path))
    ev = EventTable(st)
    ev.append([("alert", 1.0, {"a": 1}), ("canary", 2.0, {"b": 2})])
    again = EventTable(st)  # a restarted actor continues the sequence
    again.append([("alert", 3.0, {"c": 3})])
    rows = again.read()
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert [r["kind"] for r in again.read(kinds=["alert"])] == ["alert", "alert"]
    assert rows[1]["payload"] == {"b": 2}


def test_group_committer_shares_commits_and_propagates_errors():
    import threading

    commits: list[list[int]] = []

    def commit(items):
        if not commits:  # the first leader holds its commit until the others queued up
            wait_for(
                lambda: len(gc._queue) >= 5, timeout=5, interval=0.001, message="5 queued submits"
            )
        commits.append(list(items))

    gc = GroupCommitter(commit)
    threads = [threading.Thread(target=gc.submit, args=([i],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(x for c in commits for x in c) == list(range(6))
    assert len(commits) == 2  # one leader alone, then everyone queued meanwhile in one commit

    def boom(items):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        GroupCommitter(boom).submit([1])
