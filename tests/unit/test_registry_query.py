"""Run search: filter strings and order_by."""

from __future__ import annotations

import pytest

from raymlp.errors import ValidationError
from raymlp.registry.query import parse_filter, parse_order_by, search
from raymlp.registry.state import RunRecord


def _run(i, status="FINISHED", **metrics):
    return RunRecord(
        run_id=f"r{i}",
        experiment="e",
        tenant="default",
        name=f"trial-{i}",
        created_by="a",
        start_time=float(i),
        status=status,
        params={"lr": 0.1 * i, "opt": "adam" if i % 2 else "sgd"},
        metrics=metrics,
        tags={"team": "x"},
    )


RUNS = [
    _run(1, val_auc=0.7, loss=0.5),
    _run(2, val_auc=0.9, loss=0.3),
    _run(3, "FAILED", loss=0.9),
    _run(4, val_auc=0.8),
    _run(5, "RUNNING", val_auc=float("nan")),
]


def _ids(runs):
    return [r.run_id for r in runs]


def test_order_by_metric_missing_last():
    assert _ids(search(RUNS, order_by="metrics.val_auc DESC")) == ["r2", "r4", "r1", "r5", "r3"]
    assert _ids(search(RUNS, order_by="metrics.val_auc ASC"))[:3] == ["r1", "r4", "r2"]
    assert _ids(search(RUNS)) == ["r5", "r4", "r3", "r2", "r1"]  # newest first
    assert _ids(search(RUNS, order_by=["status", "metrics.loss DESC"]))[:2] == ["r3", "r1"]
    assert _ids(search(RUNS, order_by="metrics.val_auc DESC", max_results=2)) == ["r2", "r4"]


def test_filters():
    assert _ids(search(RUNS, filter="metrics.val_auc > 0.75")) == ["r4", "r2"]
    assert _ids(search(RUNS, filter="status = 'FINISHED' and params.opt = 'sgd'")) == ["r4", "r2"]
    assert _ids(search(RUNS, filter="params.lr >= 0.3 AND attributes.status != 'RUNNING'")) == [
        "r4",
        "r3",
    ]
    assert _ids(search(RUNS, filter="tags.team = 'x' and name = 'trial-1'")) == ["r1"]
    assert search(RUNS, filter="metrics.nope > 0") == []


@pytest.mark.parametrize("bad", ["val_auc >", "metrics.val_auc ~ 3", "foo = 1", "metrics.a > abc"])
def test_bad_filters_are_validation_errors(bad):
    with pytest.raises(ValidationError) as e:
        parse_filter(bad)
    assert e.value.field == "filter"


def test_bad_order_by_and_max_results():
    with pytest.raises(ValidationError) as e:
        parse_order_by("metrics.a DOWN")
    assert e.value.field == "order_by"
    with pytest.raises(ValidationError):
        search(RUNS, max_results=0)
