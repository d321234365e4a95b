"""The monitor actor's exactly-once guarantees on a real Ray cluster with real Delta tables:
re-sent prediction records and labels are logged once (also after a restart), canary
decisions act only once their event is durable, and the Prometheus endpoint keeps its address
across restarts."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import ray
from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families

from raymlp.config import PlatformConfig
from raymlp.errors import StorageError
from tests._wait import wait_for

CANARY = {"canary": {"min_requests": 30, "min_stable_requests": 20, "min_step_duration": "1m"}}


@pytest.fixture
def platform_config(tmp_path) -> PlatformConfig:
    # No background evaluation during a test: each test evaluates when it means to.
    return PlatformConfig.model_validate(
        {"storage": {"root": str(tmp_path / "root")}, "monitor": {"evaluate_interval_s": 3600}}
    )


def _register(platform, tmp_path, model: str, versions: int) -> None:
    art = tmp_path / "artifact"
    art.mkdir(exist_ok=True)
    (art / "weights.bin").write_bytes(b"w")
    for _ in range(versions):
        platform.registry.register(model, art)


def _records(n: int, *, version: int = 1, route: str = "primary", errors: int = 0) -> list[dict]:
    return [
        {
            "request_id": uuid.uuid4().hex,
            "model": "churn",
            "version": version,
            "route": route,
            "features": {"tenure": float(i % 40)},
            "prediction": None if i < errors else i % 2,
            "probability": None if i < errors else 0.1 + 0.8 * (i % 2),
            "latency_ms": 5.0,
            "error_code": "timeout" if i < errors else None,
        }
        for i in range(n)
    ]


def _table(platform, name: str) -> DeltaTable:
    return DeltaTable(
        platform.storage.uri("monitoring", name),
        storage_options=platform.storage.delta_storage_options(),
    )


def _total(text: str, sample: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == sample and s.labels.get("model") == "churn"
    )


def _restart_monitor(mon, replayed: int) -> None:
    ray.kill(ray.get_actor("monitor", namespace="raymlp"), no_restart=False)
    wait_for(  # calls raise while the actor restarts
        lambda: mon.stats()["replayed"]["predictions"] == replayed,
        timeout=60,
        interval=0.2,
        message="monitor restart",
    )


def test_resent_batches_are_logged_once_across_a_restart_on_a_stable_endpoint(
    platform, tmp_path
):
    mon = platform.monitor
    _register(platform, tmp_path, "churn", versions=2)
    answered = _records(40)
    # a shadow call shares the request id of the request it shadows: a row of its own
    shadows = [{**r, "version": 2, "route": "shadow"} for r in answered[:10]]
    batch = answered + shadows
    labels = [{"request_id": r["request_id"], "label": 1} for r in answered[:15]]
    url = mon.metrics_url()

    assert mon.log_predictions(batch, source="gateway")["accepted"] == 50
    again = mon.log_predictions(batch, source="gateway")  # a retry after a timeout
    assert (again["accepted"], again["duplicates"]) == (0, 50)
    fresh = _records(5)
    mixed = mon.log_predictions(answered[:5] + fresh, source="gateway")
    assert (mixed["accepted"], mixed["duplicates"]) == (5, 5)
    assert mon.log_feedback(labels) == {"accepted": 15, "unknown": 0, "duplicates": 0}
    # a second label for a request is dropped (also one repeated within a batch)
    twice = mon.log_feedback(labels[:3] + labels[:1])
    assert (twice["accepted"], twice["duplicates"]) == (0, 4)
    text = httpx.get(url, timeout=10).text
    assert 'raymlp_prediction_log_duplicates_total{kind="prediction"} 55.0' in text
    assert 'raymlp_prediction_log_duplicates_total{kind="feedback"} 4.0' in text

    _restart_monitor(mon, replayed=55)
    # the recent keys came back from the logs: the same batch is still a duplicate
    after = mon.log_predictions(batch, source="gateway")
    assert (after["accepted"], after["duplicates"]) == (0, 50)
    assert mon.log_feedback(labels)["duplicates"] == 15
    assert mon.log_predictions(_records(3), source="gateway")["accepted"] == 3

    rows = _table(platform, "prediction_log").to_pyarrow_table(columns=["request_id", "route"])
    keys = Counter(zip(rows["request_id"].to_pylist(), rows["route"].to_pylist()))
    assert rows.num_rows == 58 and set(keys.values()) == {1}
    assert sum(1 for _, route in keys if route == "shadow") == 10
    fb = _table(platform, "feedback").to_pyarrow_table(columns=["request_id"])
    assert sorted(fb["request_id"].to_pylist()) == sorted(x["request_id"] for x in labels)

    # the endpoint kept its address, and serves the series after the restart
    assert mon.metrics_url() == url
    text = httpx.get(url, timeout=10).text
    assert _total(text, "raymlp_predictions_total") == 3  # counted live since the restart
    assert 'raymlp_prediction_log_duplicates_total{kind="prediction"} 50.0' in text
    _restart_monitor(mon, replayed=58)  # a second restart binds the same port again
    assert mon.metrics_url() == url
    assert "raymlp_feedback_pending" in httpx.get(url, timeout=10).text


def test_no_traffic_change_without_a_durable_canary_event(platform, tmp_path):
    mon = platform.monitor
    _register(platform, tmp_path, "churn", versions=2)
    mon.apply_config(CANARY)  # also creates the events table
    calls = tmp_path / "controller.jsonl"

    def controller(model, *, canary_version, canary_weight, reason, _path=str(calls)):
        with open(_path, "a") as f:
            f.write(json.dumps([model, canary_version, canary_weight]) + "\n")
        return {"applied": True}

    mon.set_traffic_controller(controller)
    mon.log_predictions(
        _records(200) + _records(60, version=2, route="canary", errors=30), source="test"
    )

    # The events table cannot take a commit (its log directory is a file for a while).
    delta_log = Path(platform.storage.root) / "monitoring" / "events" / "_delta_log"
    aside = delta_log.with_name("_delta_log.aside")
    delta_log.rename(aside)
    delta_log.write_text("not a directory")
    try:
        with pytest.raises(StorageError):
            mon.evaluate()
        # the rollback was decided but is not durable: it did not happen
        assert not calls.exists()
        assert mon.canary("churn") == [] and mon.alerts("firing") == []
        assert mon.stats()["controller_pending"] == []
    finally:
        delta_log.unlink()
        aside.rename(delta_log)

    out = mon.evaluate()  # the next evaluation decides again, durably, and acts
    assert [(a["decision"], a["weight"]) for a in out["canary"]] == [
        ("start", 5.0),
        ("rollback", 0.0),
    ]
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [["churn", 2, 0.0]]
    events = _table(platform, "events").to_pyarrow_table(columns=["kind", "payload"])
    decided = [
        json.loads(p)["action"]["decision"]
        for k, p in zip(events["kind"].to_pylist(), events["payload"].to_pylist())
        if k == "canary"
    ]
    assert decided == ["start", "rollback"]
    assert [a["rule"] for a in mon.alerts("firing")] == ["canary_rollback"]
