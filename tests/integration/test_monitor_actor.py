"""The monitor actor on a real local Ray cluster with real Delta tables: live drift and its
alert, accuracy from feedback, the Prometheus endpoint, restart without losing alert state,
and an automatic rollback of a bad canary."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import numpy as np
import pyarrow as pa
import ray
from prometheus_client.parser import text_string_to_metric_families

from raymlp.cli import main as cli_main
from raymlp.training.profile import build_profile
from tests._wait import wait_for

MONITORING = {
    "rules": [
        {
            "name": "feature-drift",
            "metric": "feature_drifted",
            "condition": ">=",
            "threshold": 1,
            "window": "1h",
            "severity": "warning",
        },
        {
            "name": "low-accuracy",
            "metric": "accuracy",
            "condition": "<",
            "threshold": 0.5,
            "window": "1h",
            "min_count": 50,
        },
    ],
    "drift": {"min_samples": 100},
    "canary": {"min_requests": 30, "min_stable_requests": 20, "min_step_duration": "1m"},
}


def _write_profile(platform, model: str, version: int = 1) -> None:
    rng = np.random.default_rng(0)
    n = 3000
    t = pa.table(
        {
            "tenure": rng.normal(24, 6, n),
            "charges": rng.normal(70, 20, n),
            "contract": rng.choice(["monthly", "yearly"], n),
        }
    )
    prof = build_profile(
        t,
        {"tenure": "numeric", "charges": "numeric", "contract": "categorical"},
        predictions=rng.beta(2, 5, n),
    )
    platform.storage.write_bytes(
        f"models/{model}/{version}/reference_profile.json", json.dumps(prof).encode()
    )


def _traffic(
    n: int,
    model: str,
    *,
    version: int = 1,
    route: str = "primary",
    shift: float = 0.0,
    error_rate: float = 0.0,
    seed: int = 0,
) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = float(rng.beta(2, 5))
        err = bool(rng.random() < error_rate)
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
                "prediction": None if err else int(p >= 0.5),
                "probability": None if err else p,
                "latency_ms": float(rng.uniform(2, 8)),
                "error_code": "timeout" if err else None,
            }
        )
    return out


def _register(platform, tmp_path, model: str, versions: int = 1) -> None:
    """Only registered model versions are monitored: register ``versions`` of ``model``."""
    art = tmp_path / "artifact"
    art.mkdir(exist_ok=True)
    (art / "weights.bin").write_bytes(b"w")
    for _ in range(versions):
        platform.registry.register(model, art)


def _series(text: str, name: str, **labels: str) -> list[float]:
    """Values of the exposition lines of ``name`` whose labels include ``labels``."""
    out = []
    for m in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            out.append(float(m.group(2)))
    return out


def test_drift_alert_accuracy_metrics_and_restart(platform, tmp_path):
    mon = platform.monitor
    _register(platform, tmp_path, "churn")
    _register(platform, tmp_path, "risk")
    _write_profile(platform, "churn")
    _write_profile(platform, "risk")
    assert mon.apply_config(MONITORING)["rules"] == 2

    log = mon.logger(source="test", batch_size=200, flush_interval_s=0.05)
    churn = _traffic(600, "churn", seed=1)
    for r in churn + _traffic(600, "risk", shift=0.6, seed=2):
        assert log.log(r)
    # labels for half the churn requests: 80% agree with the prediction
    rng = np.random.default_rng(3)
    for r in churn[:300]:
        truth = r["prediction"] if rng.random() < 0.8 else 1 - r["prediction"]
        assert log.feedback({"request_id": r["request_id"], "label": truth})
    assert log.flush(60) and log.stats()["dropped"] == 0
    log.close()

    out = mon.evaluate()
    fired = {
        (t["rule"], t["labels"]["model"], t["labels"].get("feature"))
        for t in out["transitions"]
        if t["transition"] == "firing"
    }
    assert fired == {("feature-drift", "risk", "tenure")}  # the unshifted model stays quiet
    (alert,) = mon.alerts("firing")

    rep = mon.report("churn", start="1h", html_path=tmp_path / "churn.html")
    assert rep["traffic"]["requests"] == 600 and rep["drift"]["drifted"] == []
    assert rep["accuracy"]["labelled"] == 300
    assert abs(rep["accuracy"]["accuracy"] - 0.8) < 0.07
    assert (tmp_path / "churn.html").read_text().count("<svg") >= 3

    # the Prometheus endpoint serves the named series
    text = httpx.get(mon.metrics_url(), timeout=10).text
    assert sum(_series(text, "raymlp_predictions_total", model="churn", route="primary")) == 600
    assert _series(text, "raymlp_feature_drift_psi", model="risk", feature="tenure")[0] > 0.2
    assert _series(text, "raymlp_feature_missing_ratio", model="churn", feature="tenure") == [0]
    assert _series(text, "raymlp_alerts_firing", rule="feature-drift") == [1.0]
    assert _series(text, "raymlp_prediction_latency_seconds_count", model="churn")
    assert _series(text, "raymlp_feedback_total", model="churn") == [300.0]
    # the whole page parses as Prometheus text exposition (what a real scraper does)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "raymlp_predictions",
        "raymlp_prediction_latency_seconds",
        "raymlp_feature_drift_psi",
        "raymlp_alerts_firing",
    } <= families

    # the same series reach Ray's own metrics export (what the dashboard's metrics view reads)
    node = next(n for n in ray.nodes() if n["Alive"])
    ray_url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    wait_for(
        lambda: _series(
            httpx.get(ray_url, timeout=10).text, "ray_raymlp_predictions_total", model="churn"
        ),
        timeout=60,
        interval=0.2,
        message="ray_raymlp_predictions_total in Ray's metrics export",
    )

    # a crash: Ray restarts the actor, which rebuilds windows and alerts from storage
    handle = ray.get_actor("monitor", namespace="raymlp")
    ray.kill(handle, no_restart=False)
    wait_for(  # the actor is still restarting while calls raise
        lambda: mon.stats()["replayed"]["predictions"] == 1200,
        timeout=60,
        interval=0.2,
        message="monitor restart",
    )
    (after,) = mon.alerts("firing")
    assert (after["id"], after["fired_at"]) == (alert["id"], alert["fired_at"])
    assert mon.evaluate()["transitions"] == []  # still firing: nothing new to announce
    rep2 = mon.report("churn", start="1h")
    assert rep2["traffic"]["requests"] == 600 and rep2["accuracy"]["labelled"] == 300
    text = httpx.get(mon.metrics_url(), timeout=10).text
    assert _series(text, "raymlp_alerts_firing", rule="feature-drift") == [1.0]
    stats = mon.stats()
    assert stats["rules"] == ["feature-drift", "low-accuracy"]  # runtime config survived too
    assert stats["ray_metrics_mirror"]  # also exported through ray.util.metrics
    # a range older than the in-memory retention is rebuilt from the prediction log
    old = mon.report("churn", start="7h")
    assert old["source"] == "prediction_log" and old["traffic"]["requests"] == 600
    assert old["accuracy"]["labelled"] == 300


def test_bad_canary_is_rolled_back_automatically(platform, tmp_path, capsys):
    mon = platform.monitor
    _register(platform, tmp_path, "churn", versions=2)
    _write_profile(platform, "churn")
    _write_profile(platform, "churn", version=2)
    mon.apply_config(MONITORING)
    calls = tmp_path / "controller.jsonl"

    def controller(model, *, canary_version, canary_weight, reason, _path=str(calls)):
        with open(_path, "a") as f:
            f.write(
                json.dumps(
                    {
                        "model": model,
                        "version": canary_version,
                        "weight": canary_weight,
                        "reason": reason,
                    }
                )
                + "\n"
            )
        return {"applied": True}

    mon.set_traffic_controller(controller)
    mon.log_predictions(
        _traffic(200, "churn", seed=4)
        + _traffic(60, "churn", version=2, route="canary", error_rate=0.5, seed=5),
        source="test",
    )

    out = mon.evaluate()
    decisions = [(a["decision"], a["version"], a["weight"]) for a in out["canary"]]
    assert decisions == [("start", 2, 5.0), ("rollback", 2, 0.0)]
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [(c["model"], c["version"], c["weight"]) for c in recorded] == [("churn", 2, 0.0)]
    assert "error rate" in recorded[0]["reason"]
    (alert,) = [a for a in mon.alerts("firing") if a["rule"] == "canary_rollback"]
    assert alert["severity"] == "critical" and alert["labels"] == {"model": "churn", "version": "2"}
    assert mon.canary("churn")[0]["status"] == "rolled_back"
    assert mon.evaluate()["canary"] == []  # decided once; no flapping

    cfg = tmp_path / "platform.yaml"
    cfg.write_text(f"storage:\n  root: {platform.storage.root}\n")
    assert cli_main(["monitor", "alerts", "--config", str(cfg)]) == 0
    assert "canary_rollback" in capsys.readouterr().out
    html = tmp_path / "r.html"
    assert (
        cli_main(
            [
                "monitor",
                "report",
                "churn",
                "--since",
                "30m",
                "--html",
                str(html),
                "--config",
                str(cfg),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "CANARY v2 (stable v1): rolled_back" in printed and html.exists()
    assert cli_main(["monitor", "resolve", alert["id"], "--config", str(cfg)]) == 0
    assert [a for a in mon.alerts("firing") if a["rule"] == "canary_rollback"] == []
