"""Threats: unbounded HTTP inputs (issue 13, "bounded inputs and resources"), each attacked
through the live HTTP API (auth on, two tenants), asserting the refusal in our error schema and
that nothing changed (no record logged, no breaker opened, other callers unaffected).

One application for the module: a 64 KiB body limit, at most 50 instances per batch, and rate
limits that are generous for every tenant but ``globex`` (3 requests at once, then one per 50 s;
50 instances at once, then one per second).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.security._http_app import KEYS, App, assert_error, http_app

GATEWAY = {
    "max_body_bytes": 64 * 1024,
    "max_instances_per_request": 50,
    "rate_limit": {
        "enabled": True,
        "requests_per_s": 1000,
        "requests_burst": 1000,
        "instances_per_s": 100_000,
        "instances_burst": 100_000,
        "tenants": {
            "globex": {
                # refills one request per 50 s: nothing refills while a test runs
                "requests_per_s": 0.02,
                "requests_burst": 3,
                "instances_per_s": 1,
                "instances_burst": 50,
            }
        },
    },
}


@pytest.fixture(scope="module")
def app(ray_cluster, tmp_path_factory):
    yield from http_app(tmp_path_factory.mktemp("sec-limits"), gateway=GATEWAY)


def _logged(app: App) -> int:
    return app.gateway_stats()["prediction_log"]["logged"]


def _raw(app: App, content: bytes, who: str = "ops") -> httpx.Response:
    return app.http.post(
        "/v1/predictions",
        content=content,
        headers={"x-api-key": KEYS[who], "content-type": "application/json"},
    )


def test_a_body_over_the_size_limit_is_413_and_never_processed(app):
    before = _logged(app)
    big = {"model_id": "churn", "features": {**app.fresh(), "pad": "x" * (100 * 1024)}}
    err = assert_error(app.post("/v1/predictions", big), 413, "payload_too_large")
    assert err["details"]["limit_bytes"] == 64 * 1024
    assert _logged(app) == before
    assert app.predict().status_code == 200  # the gateway still serves


def test_a_batch_over_the_instance_cap_is_422_naming_instances(app):
    before = _logged(app)
    body = {"model_id": "churn", "instances": [{"features": app.fresh()} for _ in range(51)]}
    err = assert_error(app.post("/v1/predictions:batch", body), 422, "validation_error")
    assert err["details"]["field"] == "instances" and err["details"]["value"] == 51
    assert _logged(app) == before
    ok = app.post("/v1/predictions:batch", {**body, "instances": body["instances"][:50]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 50


@pytest.mark.parametrize(
    "literal", [b"9" * 400, b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity"]
)
def test_numbers_beyond_float64_and_nan_are_422_naming_the_field(app, literal):
    before = _logged(app)
    f = app.fresh()
    f.pop("monthly_charges")
    raw = (
        b'{"model_id": "churn", "features": {"monthly_charges": '
        + literal
        + b", "
        + json.dumps(f).encode()[1:]
        + b"}"
    )
    err = assert_error(_raw(app, raw), 422, "validation_error")
    assert err["details"]["field"] == "features.monthly_charges"
    assert err["details"]["rule"] == "finite number"
    assert _logged(app) == before  # refused before any model, log or cache saw it


def test_a_batch_counts_its_instances_against_the_rate_limit(app):
    # Runs before globex sends anything else: its buckets are full (3 requests, 50 instances). One batch of 40 spends 40 instance tokens; a second one, while the
    # request bucket still has tokens, is refused for its instances.
    limited = app.gateway_stats()["counts"].get("rate_limited", 0)
    body = {"model_id": "other", "instances": [{"features": app.fresh()} for _ in range(40)]}
    first = app.post("/v1/predictions:batch", body, who="gina")
    assert first.status_code == 200, first.text
    before = _logged(app)
    err = assert_error(app.post("/v1/predictions:batch", body, who="gina"), 429, "overloaded")
    assert err["details"]["limit"] == "instances_per_s", err
    assert _logged(app) == before
    assert app.gateway_stats()["counts"]["rate_limited"] == limited + 1


def test_a_tenant_over_its_rate_limit_gets_429_with_retry_after_alone(app):
    statuses = []
    last = None
    for _ in range(6):
        last = app.predict(who="gus", model="other")
        statuses.append(last.status_code)
        if last.status_code == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) <= {200}, statuses
    err = assert_error(last, 429, "overloaded")
    assert err["details"]["reason"] == "rate_limit" and err["details"]["tenant"] == "globex"
    assert int(last.headers["retry-after"]) >= 1
    before = _logged(app)
    assert_error(app.predict(who="gina", model="other"), 429, "overloaded")  # the whole tenant
    assert _logged(app) == before  # a refused request is never processed
    for _ in range(5):  # the other tenant is untouched
        assert app.predict(who="alice").status_code == 200


def test_a_batch_of_bad_instances_does_not_open_the_breaker(app):
    bad = {"model_id": "churn", "instances": [{"features": {"tenure_months": "x"}}] * 50}
    for _ in range(3):
        assert_error(app.post("/v1/predictions:batch", bad, who="alice"), 422, "validation_error")
    breakers = app.get("/v1/models/churn").json()["breakers"]
    assert all(b["state"] == "closed" for b in breakers.values()), breakers
    r = app.predict(who="alice")
    assert r.status_code == 200 and r.json()["route"] == "primary"


def test_a_bad_entity_request_fails_alone_in_its_serve_batch(app):
    before = app.model_server_stats()

    async def round_trip() -> list[tuple[str, int]]:
        async with httpx.AsyncClient(base_url=app.url, timeout=60) as c:

            async def one(kind: str, i: int) -> tuple[str, int]:
                # a request without the join key fails the online lookup of its whole batch
                entity = {"customer_id": f"c{i % 40}"} if kind == "good" else {"account": "zzz"}
                r = await c.post(
                    "/v1/predictions",
                    json={"model_id": "churn-online", "entity": entity},
                    headers={"x-api-key": KEYS["ops"]},
                )
                return kind, r.status_code

            kinds = ["bad" if i % 4 == 0 else "good" for i in range(16)]
            return await asyncio.gather(*(one(k, i) for i, k in enumerate(kinds)))

    results = []
    for _ in range(4):
        results += asyncio.run(round_trip())
    good = [s for k, s in results if k == "good"]
    bad = [s for k, s in results if k == "bad"]
    assert good == [200] * len(good), results
    assert bad == [422] * len(bad), results
    after = app.model_server_stats()
    # a batch that held a bad request was looked up again request by request: its
    # batch-mates were isolated from it (more lookups than batches)
    assert after["max_batch_size_seen"] > 1
    lookups = after["feature_calls"] - before["feature_calls"]
    batches = after["batches"] - before["batches"]
    assert lookups > batches, (lookups, batches)
