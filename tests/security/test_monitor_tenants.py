"""Threat: one tenant reads or rewrites another tenant's monitoring (issue 13 items 2 and 5).

Auth on, two tenants: alice (developer, ``default``) owns ``churn``; carol (developer,
``acme``) owns ``fraud``. The gateway's service principal (``serving``) logs the records.
Each attack goes through a public surface (the SDK, a raw actor handle from this driver) and
asserts both the refusal and that nothing changed.
"""

from __future__ import annotations

import pytest
import ray

from raymlp._private.rpc import call
from raymlp.client import Platform
from raymlp.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from tests.security._monitor import ERRORS_RULE, as_, auth_config, records, register


@pytest.fixture
def platform_config(tmp_path):
    return auth_config(str(tmp_path / "root"))


@pytest.fixture
def tenants(platform, tmp_path) -> tuple[Platform, Platform]:
    """alice's and carol's sessions; churn (default) with 40 records, half of them errors, and
    a v2 canary, so it has traffic, a firing alert and a canary run; fraud (acme) healthy."""
    alice, carol = as_(platform, "alice"), as_(platform, "carol")
    register(alice, tmp_path, "churn", versions=2)
    register(carol, tmp_path, "fraud")
    as_(platform, "ops").monitor.apply_config({"rules": [ERRORS_RULE]})
    gateway = as_(platform, "serving")
    res = gateway.monitor.log_predictions(
        records(40, "churn", error_rate=0.5)
        + records(5, "churn", version=2, route="canary")
        + records(20, "fraud", tenant="acme"),
        source="gateway",
    )
    assert res == {"accepted": 65, "unknown": 0, "duplicates": 0, "dropped_reported": 0}
    alice.monitor.evaluate()
    (alert,) = alice.monitor.alerts("firing")
    assert alert["labels"]["model"] == "churn"
    return alice, carol


def _churn_view(alice: Platform) -> tuple:
    rep = alice.monitor.report("churn")
    return (
        rep["tenant"],
        rep["traffic"]["requests"],
        [(a["id"], a["state"]) for a in alice.monitor.alerts()],
        [(c["model"], c["version"], c["status"]) for c in alice.monitor.canary("churn")],
    )


def test_another_tenants_developer_sees_nothing_of_a_model(tenants):
    alice, carol = tenants
    before = _churn_view(alice)
    assert before[0] == "default" and before[1] == 45 and before[3] == [("churn", 2, "running")]
    # another tenant's model answers exactly like a model that does not exist
    for model in ("churn", "no-such-model"):
        for read in (
            lambda m: carol.monitor.report(m),
            lambda m: carol.monitor.metrics(m),
            lambda m: carol.monitor.canary(m),
        ):
            with pytest.raises(NotFoundError, match=f"model '{model}' does not exist"):
                read(model)
    # the listing reads hold carol's own model only
    assert {a["labels"].get("model") for a in carol.monitor.alerts(None)} <= {"fraud"}
    assert carol.monitor.canary() == []
    gauges = carol.monitor.metrics()
    assert gauges and all(r["labels"]["model"] == "fraud" for rows in gauges.values() for r in rows)
    samples = carol.monitor.signal("error_rate", "5m")
    assert [s["labels"]["model"] for s in samples] == ["fraud"]
    text = carol.monitor.metrics_text()
    assert 'model="fraud"' in text and 'model="churn"' not in text
    assert carol.monitor.stats()["models"] == ["fraud"]
    assert [t["labels"]["model"] for t in carol.monitor.evaluate()["transitions"]] == []
    # nor can carol end alice's alert: it answers like an unknown alert id
    alert_id = alice.monitor.alerts("firing")[0]["id"]
    with pytest.raises(NotFoundError, match="no firing alert"):
        carol.monitor.resolve_alert(alert_id)
    assert _churn_view(alice) == before


def test_a_rejected_request_of_another_tenant_does_not_change_the_owner(platform, tenants):
    alice, carol = tenants
    before = _churn_view(alice)
    # carol's request for churn was refused by the gateway; its record names her tenant
    gateway = as_(platform, "serving")
    rejected = records(1, "churn", tenant="acme", error_rate=1.0)
    rejected[0]["error_code"] = "permission_denied"
    assert gateway.monitor.log_predictions(rejected)["accepted"] == 1
    tenant, requests, alerts, canary = _churn_view(alice)
    assert tenant == "default" and requests == before[1] + 1  # the owner is the registry's
    assert (alerts, canary) == (before[2], before[3])
    with pytest.raises(NotFoundError):
        carol.monitor.report("churn")  # and carol still sees nothing of it


def test_a_person_cannot_log_records_for_another_tenants_model(tenants):
    alice, carol = tenants
    before = _churn_view(alice)
    # carol fakes 200 failed requests of alice's model to fire alerts or roll a canary back
    res = carol.monitor.log_predictions(records(200, "churn", error_rate=1.0))
    assert res["accepted"] == 0 and res["unknown"] == 200
    # ... and records that claim alice's tenant for carol's own model carry carol's tenant
    assert carol.monitor.log_predictions(records(3, "fraud", tenant="default"))["accepted"] == 3
    text = carol.monitor.metrics_text()
    assert 'raymlp_predictions_total{model="fraud",route="primary",tenant="acme",' in text
    assert 'tenant="default"' not in text
    # labels for alice's requests are refused too
    assert carol.monitor.log_feedback([{"request_id": "r1", "label": 1, "model": "churn"}]) == {
        "accepted": 0,
        "unknown": 1,
        "duplicates": 0,
    }
    assert _churn_view(alice) == before


def test_a_raw_actor_handle_with_a_claimed_identity_is_refused(tenants):
    alice, _ = tenants
    before = _churn_view(alice)
    handle = ray.get_actor("monitor", namespace="raymlp")
    for claim in ({"name": "x", "roles": ["admin"]}, {"name": "ops"}, {}, None):
        with pytest.raises(AuthenticationError):
            call(handle.report.remote(claim, "churn"))
        with pytest.raises(AuthenticationError):
            call(handle.log_predictions.remote(claim, records(50, "churn", error_rate=1.0)))
        with pytest.raises(AuthenticationError):
            call(handle.set_traffic_controller.remote(claim, None))
        with pytest.raises(AuthenticationError):
            call(handle.resolve_alert.remote(claim, before[2][0][0]))
    with pytest.raises(AuthenticationError, match="not known"):
        call(handle.alerts.remote({"name": "alice", "api_key": "guessed"}))
    # an authenticated developer is still not an admin: the controller is code run inside
    with pytest.raises(PermissionDeniedError, match="needs role 'admin'"):
        alice.monitor.set_traffic_controller(None)
    assert _churn_view(alice) == before
