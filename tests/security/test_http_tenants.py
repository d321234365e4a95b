"""Threats: tenants not sealed at the HTTP surface, unapproved versions pinned, feedback not
bound to its request (issue 13, "sealed tenants" and "traffic is a promotion", HTTP parts).
Each attacks through the live HTTP API (auth on, tenants acme and globex) and asserts the
refusal in our error schema and that nothing changed.
"""

from __future__ import annotations

import pytest

from tests._wait import wait_for
from tests.security._http_app import App, assert_error


@pytest.fixture(scope="module")
def app(tenants_app: App) -> App:
    """The package's shared application (tests/security/conftest.py): other modules may have
    used it first, so these tests assert on deltas of its counters and records."""
    return tenants_app


def _logged(app: App) -> int:
    return app.gateway_stats()["prediction_log"]["logged"]


def _recent(app: App) -> list[dict]:
    return app.p.serve.handle().recent_records.remote(10_000).result(timeout_s=30)


def _same_but_name(a: dict, b: dict, name_a: str, name_b: str) -> None:
    """Two error bodies equal once the model name asked for is swapped."""
    assert a["code"] == b["code"]
    assert a["message"].replace(repr(name_a), "<m>") == b["message"].replace(repr(name_b), "<m>")
    da = {k: v for k, v in a["details"].items() if k != "request_id"}
    db = {k: v for k, v in b["details"].items() if k != "request_id"}
    assert {**da, "name": "<m>"} == {**db, "name": "<m>"}


# -- another tenant's model is a model that does not exist --------------------------------------


def test_another_tenants_model_answers_exactly_like_a_missing_one(app):
    before = _logged(app)
    f = app.fresh()
    calls = [
        lambda m: app.post("/v1/predictions", {"model_id": m, "features": f}, who="gina"),
        lambda m: app.post(
            "/v1/predictions:batch", {"model_id": m, "instances": [{"features": f}]}, who="gina"
        ),
        lambda m: app.get(f"/v1/models/{m}", who="gina"),
        lambda m: app.post(
            "/v1/predictions", {"model_id": m, "entity": {"customer_id": "c1"}}, who="gus"
        ),
    ]
    for call in calls:
        foreign, missing = call("churn"), call("no-such-model")
        assert foreign.status_code == missing.status_code == 404
        assert set(foreign.json()) == set(missing.json()) == {"error"}
        _same_but_name(
            assert_error(foreign, 404, "not_found"),
            assert_error(missing, 404, "not_found"),
            "churn",
            "no-such-model",
        )
    listed = {m["model_id"] for m in app.get("/v1/models", who="gina").json()["models"]}
    assert listed == {"other"}
    assert _logged(app) == before  # no record: the monitor never hears of the attempts
    assert app.predict(who="alice").status_code == 200  # the owner is unaffected


# -- /readyz ------------------------------------------------------------------------------------


def test_readyz_without_a_key_says_ready_and_nothing_else(app):
    r = app.get("/readyz", who=None)
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    assert "churn" not in r.text and "other" not in r.text
    assert app.get("/readyz", who="gina").json() == {"status": "ready", "models": {"other": 1}}
    assert app.get("/readyz", who="alice").json()["models"] == {"churn": 1, "churn-online": 1}
    bad = app.http.get("/readyz", headers={"x-api-key": "not-a-key"})
    assert_error(bad, 401, "unauthenticated")


# -- version pinning ----------------------------------------------------------------------------


def test_a_viewer_cannot_pin_a_version_that_is_not_served(app):
    seen = {x["request_id"] for x in _recent(app)}
    r = app.predict(who="alice", version=2)  # v2 is registered, never approved or served
    err = assert_error(r, 403, "permission_denied")
    assert err["details"]["rule"] == "version pinning" and err["details"]["field"] == "version"
    assert "served" in err["message"]
    # nothing answered from v2: no new record of it, and the route is unchanged
    new = [x for x in _recent(app) if x["request_id"] not in seen]
    assert not [x for x in new if x["model"] == "churn" and x.get("version") == 2]
    assert app.get("/v1/models/churn", who="alice").json()["stable_version"] == 1
    served = app.predict(who="alice", version=1)  # a served version may be pinned
    assert served.status_code == 200 and served.json()["model_version"] == "1"


def test_a_developer_of_the_tenant_may_pin_any_version_others_may_not(app):
    dev = app.predict(who="dev", version=2)
    assert dev.status_code == 200 and dev.json()["model_version"] == "2"
    # a developer of another tenant does not even see the model
    assert_error(app.predict(who="gina", version=2), 404, "not_found")
    assert_error(app.predict(who="gus", model="other", version=7), 403, "permission_denied")


# -- feedback bound to the original request ----------------------------------------------------------


def _shipper(app: App) -> dict:
    return app.gateway_stats()["prediction_log"]["shipper"]


def _settled_sent(app: App) -> int:
    """The shipper's ``sent`` once everything logged so far has shipped (records ship in the
    background: earlier tests' predictions, the fuzz's, may still be on their way)."""
    last: list[int] = []

    def settled() -> bool:
        s = _shipper(app)
        last.append(s["sent"])
        return s["queued"] == 0 and len(last) >= 2 and last[-1] == last[-2]

    wait_for(settled, timeout=30, interval=0.5, message="the prediction log to ship")
    return last[-1]


def test_feedback_for_an_unknown_or_foreign_request_is_404_and_not_stored(app):
    rid = app.predict(who="alice").json()["request_id"]
    sent = _settled_sent(app)
    unknown = app.post("/v1/feedback", {"request_id": "made-up-id", "label": 1}, who="gina")
    foreign = app.post("/v1/feedback", {"request_id": rid, "label": 1}, who="gina")
    wrong_model = app.post(
        "/v1/feedback", {"request_id": rid, "label": 1, "model_id": "churn-online"}, who="alice"
    )
    for r, name in ((unknown, "made-up-id"), (foreign, rid), (wrong_model, rid)):
        err = assert_error(r, 404, "not_found")
        assert err["details"]["kind"] == "request" and err["details"]["name"] == name
    _same_but_name(
        assert_error(unknown, 404, "not_found"),
        assert_error(foreign, 404, "not_found"),
        "made-up-id",
        rid,
    )
    assert _shipper(app)["sent"] == sent  # no label went to the monitor
    # the owner can still label it: the attempts changed nothing
    ok = app.post("/v1/feedback", {"request_id": rid, "label": 1, "model_id": "churn"}, "alice")
    assert ok.status_code == 202 and ok.json() == {"request_id": rid, "accepted": True}


def test_a_second_label_is_409_and_202_means_stored(app):
    rid = app.predict(who="alice").json()["request_id"]
    sent = _settled_sent(app)
    first = app.post("/v1/feedback", {"request_id": rid, "label": 0}, who="alice")
    assert first.status_code == 202 and first.json()["accepted"] is True
    ship = _shipper(app)
    # stored: by the time 202 came back, the prediction and its label were with the monitor
    assert ship["queued"] == 0 and ship["sent"] >= sent + 1
    second = app.post("/v1/feedback", {"request_id": rid, "label": 1}, who="alice")
    err = assert_error(second, 409, "conflict")
    assert err["details"]["rule"] == "one label per request"
    assert _shipper(app)["sent"] == ship["sent"]  # the second label was not shipped
    # an admin of the tenant gets the same answer: one label per request, whoever sends it
    assert_error(app.post("/v1/feedback", {"request_id": rid, "label": 1}), 409, "conflict")
