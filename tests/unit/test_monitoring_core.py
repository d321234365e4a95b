"""MonitorCore end to end without Ray: traffic → signals → alerts, accuracy from feedback,
fairness, gauges/Prometheus series, canary actions, reports, and rebuild-by-replay."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pyarrow as pa
import pytest

from raymlp.config import MonitoringConfig, MonitorSettings, load_config
from raymlp.monitoring import MonitorCore, normalize_feedbacks, normalize_predictions
from raymlp.monitoring.html import render_html
from raymlp.monitoring.reference import ReferenceProfile
from raymlp.monitoring.report import render_text
from raymlp.training.profile import build_profile

NOW = 1_750_000_000.0


def _profile() -> ReferenceProfile:
    rng = np.random.default_rng(0)
    n = 4000
    t = pa.table(
        {
            "tenure": rng.normal(24, 6, n),
            "charges": rng.normal(70, 20, n),
            "contract": rng.choice(["monthly", "yearly"], n),
        }
    )
    return ReferenceProfile.from_dict(
        build_profile(
            t,
            {"tenure": "numeric", "charges": "numeric", "contract": "categorical"},
            predictions=rng.beta(2, 5, n),
        )
    )


PROFILE = _profile()


def _cfg(**kw) -> MonitoringConfig:
    base = {
        "rules": [
            {
                "name": "drift",
                "metric": "feature_drifted",
                "condition": ">=",
                "threshold": 1,
                "window": "1h",
                "severity": "warning",
            },
            {
                "name": "errors",
                "metric": "error_rate",
                "threshold": 0.2,
                "window": "5m",
                "severity": "critical",
                "min_count": 20,
            },
            {
                "name": "accuracy",
                "metric": "accuracy",
                "condition": "<",
                "threshold": 0.7,
                "window": "1h",
                "min_count": 50,
            },
        ],
        "drift": {"min_samples": 100},
        "canary": {"min_requests": 50, "min_stable_requests": 20, "min_step_duration": "1m"},
        "models": {"churn": {"fairness_attribute": "contract"}},
    }
    base.update(kw)
    return load_config(MonitoringConfig, base)


def _core(cfg: MonitoringConfig | None = None) -> MonitorCore:
    s = MonitorSettings(monitoring=cfg or _cfg())
    return MonitorCore(s, profile_for=lambda m, v: PROFILE if m in ("churn", "other") else None)


def _records(
    n: int,
    *,
    model="churn",
    version=1,
    route="primary",
    shift=0.0,
    error_rate=0.0,
    latency_ms=5.0,
    seed=0,
    t0=NOW - 600,
    probs=None,
    span=None,
):
    span = min(500.0, NOW - t0 - 1) if span is None else span
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = float(rng.beta(2, 5)) if probs is None else probs
        err = rng.random() < error_rate
        out.append(
            {
                "request_id": uuid.uuid4().hex,
                "model": model,
                "version": version,
                "route": route,
                "features": {
                    "tenure": float(rng.normal(24 + 6 * shift, 6)),
                    "charges": float(rng.normal(70, 20)),
                    "contract": str(rng.choice(["monthly", "yearly"])),
                },
                "prediction": None if err else ("churn" if p >= 0.5 else "stay"),
                "probability": None if err else p,
                "latency_ms": float(latency_ms * (1 + rng.random())),
                "error_code": "timeout" if err else None,
                "ts": t0 + i * (span / max(n, 1)),
            }
        )
    return normalize_predictions(out)


def test_shifted_traffic_fires_the_drift_alert_and_unshifted_does_not():
    core = _core()
    core.ingest_predictions(_records(800, model="churn", shift=0.0, seed=1))
    core.ingest_predictions(_records(800, model="other", shift=0.6, seed=2))
    out = core.evaluate(NOW)
    fired = {
        (t["rule"], t["labels"]["model"], t["labels"].get("feature"))
        for t in out["transitions"]
        if t["transition"] == "firing"
    }
    assert fired == {("drift", "other", "tenure")}
    g = core.gauge_values(NOW)
    psi = {(lab["model"], lab["feature"]): v for lab, v in g["raymlp_feature_drift_psi"]}
    assert psi[("other", "tenure")] > 0.2 > psi[("churn", "tenure")]
    assert ({"rule": "drift", "severity": "warning"}, 1.0) in g["raymlp_alerts_firing"]


def test_error_rate_alert_and_perf_signals_per_route():
    core = _core()
    core.ingest_predictions(_records(200, error_rate=0.0, seed=3))
    core.ingest_predictions(_records(100, route="fallback", error_rate=0.9, seed=4, latency_ms=50))
    sig = core.signals.series("error_rate", 300, NOW, by=("route",))
    rates = {s.labels["route"]: s.value for s in sig}
    assert rates["primary"] == 0.0 and rates["fallback"] > 0.7
    out = core.evaluate(NOW)
    assert [t["rule"] for t in out["transitions"]] == ["errors"]  # 90/300 overall > 0.2
    p99 = core.signals.series("latency_p99_seconds", 300, NOW, by=("route",))
    lat = {s.labels["route"]: s.value for s in p99}
    assert lat["fallback"] > 5 * lat["primary"]


def test_accuracy_and_auc_from_feedback_joined_by_request_id():
    core = _core()
    recs = _records(300, seed=5)
    core.ingest_predictions(recs)
    # labels agree with the prediction for 80% of requests
    rng = np.random.default_rng(6)
    labels = []
    for r in recs:
        truth = int(r["probability"] >= 0.5)
        if rng.random() < 0.2:
            truth = 1 - truth
        labels.append({"request_id": r["request_id"], "label": truth, "ts": NOW - 10})
    res = core.ingest_feedback(normalize_feedbacks(labels))
    assert res.matched == 300 and res.pending == 0
    again = core.ingest_feedback(normalize_feedbacks(labels[:5]))
    assert again.duplicate == 5
    acc = core.signals.series("accuracy", 3600, NOW)[0]
    assert acc.value == pytest.approx(0.8, abs=0.06) and acc.count == 300
    auc = core.signals.series("auc", 3600, NOW)[0].value
    y = np.array([lab["label"] for lab in labels])
    s = np.array([r["probability"] for r in recs])
    pos, neg = s[y == 1], s[y == 0]
    exact = np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :])
    assert auc == pytest.approx(exact, abs=0.01)
    rep = core.report("churn", NOW - 3600, NOW)
    assert rep["accuracy"]["labelled"] == 300
    fair = rep["fairness"]
    assert fair["attribute"] == "contract"
    assert {s["slice"] for s in fair["slices"]} == {"monthly", "yearly"}
    assert 0 < fair["disparate_impact"] <= 1


def test_feedback_before_its_prediction_waits_and_joins_later():
    core = _core()
    recs = _records(10, seed=7)
    res = core.ingest_feedback(
        normalize_feedbacks([{"request_id": recs[0]["request_id"], "label": 1, "ts": NOW - 5}])
    )
    assert res.pending == 1 and core.state.pending_feedback == 1
    joined = core.ingest_predictions(recs)
    assert joined.feedback_joined == {"churn": 1} and core.state.pending_feedback == 0
    assert 'raymlp_feedback_total{model="churn"} 1.0' in core.metrics.exposition().decode()
    assert core.signals.series("feedback_count", 3600, NOW)[0].value == 1


def test_schema_violations_and_rejected_requests_are_counted():
    core = _core()
    recs = _records(50, seed=8)
    bad = normalize_predictions(
        [
            {
                "request_id": "x1",
                "model": "churn",
                "version": 1,
                "features": {"tenure": "abc"},
                "ts": NOW - 60,
            },
            {
                "request_id": "x2",
                "model": "churn",
                "version": 1,
                "error_code": "schema_error",
                "ts": NOW - 60,
            },
        ]
    )
    core.ingest_predictions(recs + bad)
    ratio = core.signals.series("schema_violation_ratio", 3600, NOW)[0]
    assert ratio.value == pytest.approx(2 / 52)
    text = core.metrics.exposition().decode()
    assert 'raymlp_schema_violations_total{feature="tenure",kind="type",model="churn"} 1.0' in text
    assert 'kind="schema_error",model="churn"} 1.0' in text


def test_prometheus_exposition_has_the_stable_names():
    core = _core()
    core.ingest_predictions(_records(200, seed=9))
    core.note_dropped("gateway", 3, NOW)
    core.evaluate(NOW)
    text = core.metrics.exposition().decode()
    for name in (
        "raymlp_predictions_total",
        "raymlp_prediction_latency_seconds_bucket",
        "raymlp_feature_drift_psi",
        "raymlp_feature_missing_ratio",
        "raymlp_alerts_firing",
        "raymlp_prediction_log_dropped_total",
        "raymlp_error_rate",
        "raymlp_prediction_latency_p99_seconds",
    ):
        assert re.search(rf"^{name}\{{", text, re.M), name
    assert re.search(
        r'^raymlp_predictions_total\{model="churn",route="primary",tenant="default",'
        r'version="1"\} 200\.0$',
        text,
        re.M,
    )


def test_canary_rolls_back_a_bad_version_and_raises_an_alert():
    core = _core()
    core.ingest_predictions(_records(400, version=1, seed=10, t0=NOW - 200))
    core.ingest_predictions(
        _records(100, version=2, route="canary", error_rate=0.5, seed=11, t0=NOW - 200)
    )
    out = core.evaluate(NOW)
    decisions = [(a["decision"], a["version"], a["weight"]) for a in out["canary"]]
    assert decisions == [("start", 2, 5.0), ("rollback", 2, 0.0)]
    alerts = [t for t in out["transitions"] if t["rule"] == "canary_rollback"]
    assert alerts and alerts[0]["severity"] == "critical" and alerts[0]["source"] == "event"
    assert core.canary.runs["churn"].status == "rolled_back"


def test_a_healthy_canary_advances_step_by_step():
    core = _core()
    core.ingest_predictions(_records(300, version=1, seed=12, t0=NOW - 200, span=90))
    core.ingest_predictions(_records(60, version=2, route="canary", seed=13, t0=NOW - 200, span=90))
    first = core.evaluate(NOW - 100)
    assert [(a["decision"], a["weight"]) for a in first["canary"]] == [
        ("start", 5.0),
        ("advance", 25.0),
    ]
    core.ingest_predictions(_records(60, version=2, route="canary", seed=14, t0=NOW - 90))
    core.ingest_predictions(_records(200, version=1, seed=15, t0=NOW - 90))
    assert core.evaluate(NOW - 60)["canary"][0]["decision"] == "hold"  # step too young
    out = core.evaluate(NOW)
    assert [(a["decision"], a["weight"]) for a in out["canary"]] == [("advance", 50.0)]
    assert core.gauge_values(NOW)["raymlp_canary_weight"] == [
        ({"model": "churn", "version": "2"}, 50.0)
    ]


def test_replaying_the_same_records_rebuilds_the_same_state():
    recs = _records(500, shift=0.6, seed=16)
    a, b = _core(), _core()
    a.ingest_predictions(recs)
    ta = a.evaluate(NOW)["transitions"]
    b.engine.restore(ta)
    b.ingest_predictions(recs, live=False)
    assert b.evaluate(NOW)["transitions"] == []  # already firing: nothing new after restart
    assert a.gauge_values(NOW) == b.gauge_values(NOW)
    assert a.alerts("firing") == b.alerts("firing")


def test_reports_render_as_text_and_html():
    core = _core()
    core.ingest_predictions(_records(300, shift=0.6, seed=17))
    core.evaluate(NOW)
    rep = core.report("churn", NOW - 3600, NOW)
    assert rep["traffic"]["requests"] == 300 and rep["drift"]["drifted"] == ["tenure"]
    text = render_text(rep)
    assert "TRAFFIC" in text and "tenure" in text and "DRIFT" in text
    html = render_html(rep)
    assert html.startswith("<!doctype html>") and html.count("<svg") >= 3
    assert "PSI per feature" in html and "<script" not in html


def test_apply_config_swaps_rules_and_resolves_alerts_of_removed_ones():
    core = _core()
    core.ingest_predictions(_records(500, shift=0.6, seed=18))
    core.evaluate(NOW)
    assert core.alerts("firing")
    out = core.apply_config(_cfg(rules=[]), NOW + 1)
    assert {t["transition"] for t in out} == {"resolved"} and not core.alerts("firing")


def test_canary_follows_the_registry_traffic_state():
    traffic = {"canary_version": 2, "canary_weight": 10.0, "steps": [10, 40, 100]}
    s = MonitorSettings(monitoring=_cfg())
    core = MonitorCore(s, profile_for=lambda m, v: PROFILE, traffic_lookup=lambda m: traffic)
    core.ingest_predictions(_records(300, version=1, seed=19, t0=NOW - 200, span=90))
    core.ingest_predictions(_records(60, version=2, route="canary", seed=20, t0=NOW - 200, span=90))
    out = core.evaluate(NOW - 100)
    # the step plan and the current weight come from the registry's traffic state
    assert [(a["decision"], a["weight"]) for a in out["canary"]] == [
        ("start", 10.0),
        ("advance", 40.0),
    ]
    # a rolled-back version is judged again only once someone re-enables it
    core.canary.runs["churn"].status = "rolled_back"
    core.canary.runs["churn"].weight = 0.0
    traffic["canary_weight"] = 0.0
    assert core.evaluate(NOW - 90)["canary"] == []
    traffic["canary_weight"] = 10.0
    again = core.evaluate(NOW - 80)["canary"]
    assert again[0]["decision"] == "start" and again[0]["run"]["status"] == "running"


def test_offline_report_from_log_records_matches_the_live_one():
    core = _core()
    recs = _records(400, shift=0.6, seed=21)
    core.ingest_predictions(recs)
    core.evaluate(NOW)
    live = core.report("churn", NOW - 3600, NOW)
    off = core.offline_report("churn", NOW - 3600, NOW, [recs[:150], recs[150:]], [])
    assert off["source"] == "prediction_log"
    assert off["traffic"] == live["traffic"]
    assert off["drift"]["drifted"] == live["drift"]["drifted"] == ["tenure"]
    assert [a["id"] for a in off["alerts"]] == [a["id"] for a in live["alerts"]]
