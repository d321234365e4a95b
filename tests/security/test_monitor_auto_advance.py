"""Threat: approval bypassed by the monitor's auto-advance (issue 13 item 4).

The issue: "the monitor's auto-advance can do the same" as a developer's 100 % canary of a
never-approved version. alice runs a 5 % canary of v2, which nobody approved; the canary is
healthy, so the monitor decides to advance it to 25 %. The registry refuses (above
``max_unapproved_canary_weight``) and the monitor records that once: the canary stays at 5 %,
is marked blocked, a ``canary_blocked`` alert fires, and later evaluations neither retry nor
crash.
"""

from __future__ import annotations

import time

import pytest

from tests.security._monitor import as_, auth_config, records, register

CANARY = {"min_requests": 20, "min_stable_requests": 20, "min_step_duration": "30s"}


@pytest.fixture
def platform_config(tmp_path):
    cfg = auth_config(str(tmp_path / "root"))
    return cfg.model_copy(
        update={"registry": cfg.registry.model_copy(update={"approval_required": True})}
    )


def test_auto_advance_cannot_push_an_unapproved_canary_past_the_ceiling(platform, tmp_path):
    alice, gateway = as_(platform, "alice"), as_(platform, "serving")
    register(alice, tmp_path, "churn", versions=2)
    alice.registry.set_traffic("churn", canary_version=2, canary_weight=5.0, reason="try v2")
    as_(platform, "ops").monitor.apply_config({"canary": CANARY})
    old = time.time() - 90  # a whole step of healthy traffic already behind us
    traffic = records(100, "churn") + records(40, "churn", version=2, route="canary")
    gateway.monitor.log_predictions([{**r, "ts": old} for r in traffic])

    out = alice.monitor.evaluate()
    assert [(a["decision"], a["weight"]) for a in out["canary"]] == [
        ("start", 5.0),
        ("advance", 25.0),
    ]
    (refused,) = out["traffic_applied"]
    assert refused["model"] == "churn" and "max_unapproved_canary_weight" in refused["refused"]
    assert alice.registry.get_traffic("churn")["canary_weight"] == 5.0  # nothing changed
    (run,) = alice.monitor.canary("churn")
    assert run["status"] == "running" and run["weight"] == 5.0 and run["blocked"]
    (alert,) = alice.monitor.alerts("firing")
    assert alert["rule"] == "canary_blocked"
    assert alert["labels"] == {"model": "churn", "version": "2"}

    again = alice.monitor.evaluate()  # decided once: it holds, never asks again
    assert [a["decision"] for a in again["canary"]] == ["hold"]
    assert again["traffic_applied"] == [] and again["transitions"] == []
    assert alice.registry.get_traffic("churn")["canary_weight"] == 5.0
    assert [a["id"] for a in alice.monitor.alerts("firing")] == [alert["id"]]
