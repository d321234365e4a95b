"""Exactly-once pieces of the monitor without Ray: the recent-keys window that drops re-sent
rows, an evaluation whose decisions are undone when they cannot be made durable, and the
metrics port that is picked once and kept."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from raymlp.config import MonitoringConfig, MonitorSettings, load_config
from raymlp.monitoring import MonitorCore, normalize_predictions
from raymlp.monitoring.logtable import RecentKeys
from raymlp.monitoring.prometheus import MonitorMetrics

NOW = time.time()


def test_recent_keys_drop_known_and_repeated_keys_and_stay_bounded():
    seen = RecentKeys(3)
    fresh, dups = seen.split(["a", "b", "a", "c"], str)
    assert (fresh, dups) == (["a", "b", "c"], ["a"])  # a repeat within one batch
    assert len(seen) == 0  # split remembers nothing: a failed commit stays retryable
    seen.add(fresh)
    assert seen.split(["c", "d"], str) == (["d"], ["c"])
    seen.add(["d"])  # over capacity: the oldest key ("a") is forgotten
    assert len(seen) == 3 and "a" not in seen and all(k in seen for k in "bcd")
    seen.add(["b"])  # seen again: b is now the newest, so c goes next
    seen.add(["e"])
    assert "c" not in seen and "b" in seen
    with pytest.raises(ValueError):
        RecentKeys(0)


def test_recent_keys_tell_a_shadow_row_from_its_answered_request():
    seen = RecentKeys(10)
    seen.add([("r1", False)])
    fresh, dups = seen.split([("r1", True), ("r1", False)], lambda k: k)
    assert fresh == [("r1", True)] and dups == [("r1", False)]


def _core() -> MonitorCore:
    cfg = load_config(
        MonitoringConfig,
        {"canary": {"min_requests": 50, "min_stable_requests": 20, "min_step_duration": "1m"}},
    )
    return MonitorCore(MonitorSettings(monitoring=cfg))


def _records(n: int, *, version: int, route: str, error_rate: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        err = rng.random() < error_rate
        p = float(rng.beta(2, 5))
        out.append(
            {
                "request_id": uuid.uuid4().hex,
                "model": "churn",
                "version": version,
                "route": route,
                "features": {"tenure": float(rng.normal(24, 6))},
                "prediction": None if err else int(p >= 0.5),
                "probability": None if err else p,
                "latency_ms": 5.0,
                "error_code": "timeout" if err else None,
                "ts": NOW - 200 + i,
            }
        )
    return normalize_predictions(out)


def _decisions(out: dict) -> list[tuple[str, int, float]]:
    return [(a["decision"], a["version"], a["weight"]) for a in out["canary"]]


def _rollbacks(core: MonitorCore) -> float:
    for fam in core.metrics.canary_decisions.collect():
        for s in fam.samples:
            if s.name.endswith("_total") and s.labels["decision"] == "rollback":
                return s.value
    return 0.0


def test_a_failed_persist_undoes_the_evaluation_and_the_next_one_decides_again():
    core = _core()
    core.ingest_predictions(_records(300, version=1, route="primary", error_rate=0.0, seed=1))
    core.ingest_predictions(_records(100, version=2, route="canary", error_rate=0.5, seed=2))
    persisted: list[dict] = []

    def broken(out: dict) -> None:
        persisted.append(out)
        raise OSError("events table unwritable")

    with pytest.raises(OSError):
        core.evaluate(NOW, persist=broken)
    assert _decisions(persisted[0]) == [("start", 2, 5.0), ("rollback", 2, 0.0)]  # was decided
    # ...but not durable, so nothing of it stands: no run, no alert, no count, no gauge
    assert core.canary.runs == {} and core.alerts() == []
    assert _rollbacks(core) == 0.0 and core.last_evaluated_at is None
    assert "raymlp_canary_weight" not in core.gauge_values(NOW)

    out = core.evaluate(NOW, persist=persisted.append)
    assert _decisions(out) == [("start", 2, 5.0), ("rollback", 2, 0.0)]
    assert core.canary.runs["churn"].status == "rolled_back"
    assert [a["rule"] for a in core.alerts("firing")] == ["canary_rollback"]
    assert _rollbacks(core) == 1.0 and core.last_evaluated_at == NOW
    assert _decisions(core.evaluate(NOW + 1, persist=persisted.append)) == []  # decided once


class _Events:
    def __init__(self) -> None:
        self.appended: list[tuple[str, dict]] = []

    def append(self, events: list) -> None:
        self.appended += [(kind, payload) for kind, _, payload in events]


def _monitor_stub(recorded: int | None, port: int = 0) -> SimpleNamespace:
    """What MonitorActor._start_metrics_server reads (no Ray, no storage)."""
    return SimpleNamespace(
        config=SimpleNamespace(monitor=MonitorSettings(metrics_port=port)),
        metrics=MonitorMetrics(),
        events=_Events(),
        _metrics_port_recorded=recorded,
    )


def _serve(stub: SimpleNamespace) -> int:
    from actors.monitor import MonitorActor

    server, port = MonitorActor._start_metrics_server(stub)  # type: ignore[arg-type]
    server.shutdown()
    server.server_close()
    return port


def test_the_metrics_port_is_picked_once_recorded_and_reused(caplog):
    first = _monitor_stub(recorded=None)
    port = _serve(first)
    assert port > 0 and first.events.appended == [("metrics_endpoint", {"port": port})]
    again = _monitor_stub(recorded=port)  # a restart: same port, nothing new to record
    assert _serve(again) == port and again.events.appended == []
    with socket.socket() as taken:  # someone else took it meanwhile: a free port, recorded
        taken.bind(("127.0.0.1", port))
        taken.listen()
        moved = _monitor_stub(recorded=port)
        with caplog.at_level(logging.ERROR):
            new = _serve(moved)
    assert new != port and moved.events.appended == [("metrics_endpoint", {"port": new})]
    assert f"metrics port {port} is taken" in caplog.text
    fixed = _monitor_stub(recorded=port, port=new)  # a configured port wins, never recorded
    assert _serve(fixed) == new and fixed.events.appended == []


def _duplicates(metrics: MonitorMetrics) -> dict[str, float]:
    text = metrics.exposition().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("raymlp_prediction_log_duplicates_total{"):
            out[line.split('kind="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_duplicates_are_a_monitor_metric_by_kind():
    from actors.monitor import MonitorActor

    stub = SimpleNamespace(metrics=MonitorMetrics())
    caller_a, caller_b = [0], [0]
    dups = [({"request_id": "r1"}, "gateway", caller_a)] * 2 + [
        ({"request_id": "r2"}, "gateway", caller_b)
    ]
    MonitorActor._count_duplicates(stub, "prediction", dups)  # type: ignore[arg-type]
    MonitorActor._count_duplicates(stub, "feedback", [({"request_id": "r1"}, caller_a)])  # type: ignore[arg-type]
    MonitorActor._count_duplicates(stub, "feedback", [])  # type: ignore[arg-type]
    assert _duplicates(stub.metrics) == {"prediction": 3.0, "feedback": 1.0}
    assert (caller_a, caller_b) == ([3], [1])  # each caller's answer counts its own


def _drops_stub(append) -> SimpleNamespace:
    import threading

    counted: list[tuple[str, int]] = []
    return SimpleNamespace(
        _drops_lock=threading.Lock(),
        _lock=threading.RLock(),
        _seen_drops=RecentKeys(10),
        events=SimpleNamespace(append=append),
        core=SimpleNamespace(note_dropped=lambda src, n, now: counted.append((src, n))),
        counted=counted,
    )


def test_a_drop_report_is_counted_once_per_drop_id():
    from actors.monitor import MonitorActor

    appended: list[dict] = []
    stub = _drops_stub(lambda evs: appended.extend(p for _, _, p in evs))
    report = MonitorActor._report_dropped
    assert report(stub, "gateway", 7, "g1-1") == 7  # type: ignore[arg-type]
    assert report(stub, "gateway", 7, "g1-1") == 0  # type: ignore[arg-type]  # re-sent
    assert report(stub, "gateway", 2, "g1-2") == 2  # type: ignore[arg-type]
    assert report(stub, "sdk", 1, None) == 1  # type: ignore[arg-type]  # no id: as before
    assert stub.counted == [("gateway", 7), ("gateway", 2), ("sdk", 1)]
    assert appended == [
        {"source": "gateway", "count": 7, "drop_id": "g1-1"},
        {"source": "gateway", "count": 2, "drop_id": "g1-2"},
        {"source": "sdk", "count": 1},
    ]

    def unwritable(events):
        raise OSError("events table unwritable")

    broken = _drops_stub(unwritable)
    with pytest.raises(OSError):
        report(broken, "gateway", 3, "g2-1")  # type: ignore[arg-type]
    assert broken.counted == [] and "g2-1" not in broken._seen_drops  # the retry will count
    broken.events = SimpleNamespace(append=lambda evs: None)
    assert report(broken, "gateway", 3, "g2-1") == 3  # type: ignore[arg-type]
