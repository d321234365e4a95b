"""The serving application on a live local Serve app, over real HTTP (httpx on loopback).

One application for the whole module (start-up is the expensive part): a platform with auth on
(two tenants), models registered from real artifacts, the app deployed through ``p.serve``.
Failures are injected with :func:`raymlp.serving.examples.set_control` (a control file the
``flaky_mlp`` versions read on every forward pass) and by killing replicas.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import ray
from _serving_helpers import KEYS, local_probability, post_many, served_app
from ray import serve

from raymlp.serving.examples import example_features
from tests._wait import wait_for


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    yield from served_app(tmp_path_factory.mktemp("serving"))


# -- the API ---------------------------------------------------------------------------------


def test_primary_answer_matches_the_artifact_and_repeats_come_from_the_cache(served):
    f = example_features(5)
    r = served.predict(f)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "prediction",
        "probability",
        "model_version",
        "latency_ms",
        "request_id",
        "route",
        "model_id",
    }
    assert body["route"] == "primary" and body["model_version"] == "1"
    assert body["probability"] == pytest.approx(local_probability(served, "v1", f), abs=1e-6)
    again = served.predict(dict(reversed(list(f.items()))))  # same input, other key order
    assert again.json()["route"] == "cache"
    assert again.json()["probability"] == body["probability"]
    # the guide's request shape: the entity key inside "features" is accepted and ignored
    with_id = served.predict({**f, "customer_id": "12345"})
    assert with_id.status_code == 200 and with_id.json()["probability"] == body["probability"]


def test_error_statuses_all_have_the_schema(served):
    def check(r: httpx.Response, status: int, code: str, field: str | None = None) -> None:
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["code"] == code
        if field is not None:
            assert body["error"]["details"]["field"] == field
        assert "Traceback" not in r.text

    check(
        served.http.post(
            "/v1/predictions",
            content=b'{"model_id": ',
            headers={"x-api-key": KEYS["ops"], "content-type": "application/json"},
        ),
        400,
        "bad_request",
    )
    check(served.post(body={"model_id": "churn", "features": {}}, key=None), 401, "unauthenticated")
    check(
        served.post(
            body={"model_id": "churn", "features": {}},
            headers={"authorization": "Bearer nope"},
            key=None,
        ),
        401,
        "unauthenticated",
    )
    check(
        # Another tenant's model answers as if it did not exist (issue 13: sealed tenants).
        served.post(body={"model_id": "other", "features": example_features(1)}, key="alice"),
        404,
        "not_found",
    )
    check(served.predict(model="missing-model"), 404, "not_found")
    check(
        served.predict({**example_features(1), "tenure_months": "ten"}),
        422,
        "validation_error",
        "tenure_months",
    )
    missing = example_features(1)
    del missing["contract"]
    check(served.predict(missing), 422, "validation_error", "contract")
    check(
        served.post(body={"model_id": "churn", "features": {}, "surprise": 1}),
        422,
        "validation_error",
        "surprise",
    )
    check(served.predict(version=99), 404, "not_found")
    check(served.http.get("/v1/nothing-here"), 404, "not_found")


def test_overload_is_shed_with_429_and_nothing_else_fails(served):
    served.control("v1", delay_s=0.3)
    try:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as c:
                return await asyncio.gather(
                    *(
                        c.post(
                            "/v1/predictions",
                            headers={"x-api-key": KEYS["ops"]},
                            json={"model_id": "churn", "features": example_features(5000 + i)},
                        )
                        for i in range(60)
                    )
                )

        statuses = Counter(r.status_code for r in asyncio.run(burst()))
    finally:
        served.heal()
    assert statuses[429] > 0 and statuses[200] > 0
    assert set(statuses) <= {200, 429}, statuses
    served.wait_primary()


def test_503_when_nothing_can_answer(served):
    # "other" has no fallback model, rules or default: a failing primary leaves nothing.
    body = {"model_id": "other", "features": example_features(3)}
    assert served.post(body=body, key="gina").status_code == 200
    served.control("other", fail=True)
    try:
        r = served.post(body={**body, "features": example_features(4)}, key="gina")
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "unavailable" and set(err) == {"code", "message", "details"}
        assert err["details"]["failures"] == ["primary: model_error"]  # the model raised
        # churn, by contrast, still answers: its chain ends in a default response
        served.control("v1", fail=True)
        served.control("fb", fail=True)
        r = served.predict({**example_features(40), "tenure_months": 50})  # no rule matches
        assert r.json()["route"] == "default"
    finally:
        served.heal()
    served.wait_primary()


def test_auth_per_tenant(served):
    f = example_features(9)
    assert served.post(body={"model_id": "churn", "features": f}, key="alice").status_code == 200
    assert served.post(body={"model_id": "other", "features": f}, key="gina").status_code == 200
    assert served.post(body={"model_id": "churn", "features": f}, key="gina").status_code == 404
    listed = {
        m["model_id"]
        for m in served.http.get("/v1/models", headers={"x-api-key": KEYS["gina"]}).json()["models"]
    }
    assert listed == {"other"}
    listed = {
        m["model_id"]
        for m in served.http.get("/v1/models", headers={"x-api-key": KEYS["ops"]}).json()["models"]
    }
    assert listed == {"churn", "other", "churn-online"}
    assert served.http.get("/v1/models").status_code == 401


def test_every_fallback_route_answers_and_is_labelled(served):
    young = {**example_features(2), "tenure_months": 3}  # the "young" rule matches
    old = {**example_features(2), "tenure_months": 50}
    served.control("v1", fail=True)
    try:
        r = served.predict(young).json()
        assert (r["route"], r["model_version"]) == ("fallback", "churn-fallback:1")
        assert r["probability"] == pytest.approx(local_probability(served, "fb", young), abs=1e-6)
        served.control("fb", fail=True)
        r = served.predict(young).json()
        assert (r["route"], r["model_version"], r["prediction"]) == ("rule", "rule:young", "churn")
        r = served.predict(old).json()
        assert (r["route"], r["model_version"], r["probability"]) == ("default", "default", 0.3)
        records = served.p.serve.handle().recent_records.remote(3).result()
        assert [x["route"] for x in records] == ["fallback", "rule", "default"]
        assert records[0]["error_code"] in ("model_error", "breaker_open")
    finally:
        served.heal()
    served.wait_primary()


def test_breaker_opens_then_recovers(served):
    served.wait_primary()
    served.control("v1", fail=True)
    try:
        for _ in range(3):
            assert served.predict().json()["route"] == "fallback"
        assert served.model()["breakers"]["churn:1"]["state"] == "open"
        r = served.predict().json()
        assert r["route"] == "fallback"
        records = served.p.serve.handle().recent_records.remote(1).result()
        assert records[-1]["error_code"] == "breaker_open"  # skipped, not tried
    finally:
        served.heal()
    # after the cool-down a probe goes through, succeeds, and the breaker closes
    wait_for(
        lambda: served.predict().json()["route"] == "primary",
        timeout=20,
        interval=0.3,
        message="the breaker to close after its cool-down",
    )
    assert served.model()["breakers"]["churn:1"]["state"] == "closed"


def test_batch_feedback_health_and_openapi(served):
    body = {"model_id": "churn", "instances": [{"features": example_features(i)} for i in range(5)]}
    r = served.post("/v1/predictions:batch", body)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 5 and all(p["route"] in ("primary", "cache") for p in preds)
    assert preds[3]["request_id"] == f"{r.json()['request_id']}-3"
    bad = served.post(
        "/v1/predictions:batch",
        {
            "model_id": "churn",
            "instances": [{"features": example_features(1)}, {"features": {"tenure_months": 1}}],
        },
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["field"].startswith("instances[1].")
    fb = served.post(
        "/v1/feedback", {"request_id": preds[0]["request_id"], "label": 1, "model_id": "churn"}
    )
    assert fb.status_code == 202 and fb.json() == {
        "request_id": preds[0]["request_id"],
        "accepted": True,
    }
    assert served.http.get("/healthz").json() == {"status": "ok"}
    assert served.http.get("/readyz").json() == {"status": "ready"}  # no key: nothing else
    ready = served.http.get("/readyz", headers={"x-api-key": KEYS["ops"]})
    assert ready.status_code == 200 and ready.json()["models"]["churn"] >= 1
    spec = served.http.get("/openapi.json").json()
    assert {
        "/v1/predictions",
        "/v1/predictions:batch",
        "/v1/feedback",
        "/v1/models",
        "/v1/models/{model_id}",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])


def test_records_and_feedback_reach_the_monitor(served):
    rid = served.predict().json()["request_id"]
    served.post("/v1/feedback", {"request_id": rid, "label": 0})
    gateway = served.p.serve.handle()

    def shipped() -> dict[str, Any] | None:
        log = gateway.stats.remote().result()["prediction_log"]
        ship = log.get("shipper") or {}
        return ship if log["monitor"] and ship.get("sent", 0) >= 2 and not ship["queued"] else None

    ship = wait_for(shipped, timeout=30, interval=0.5, message="records shipped to the monitor")
    assert ship["rejected"] == 0 and ship["dropped"] == 0  # every record met the contract


def test_entity_requests_use_online_features_in_one_call_per_batch(served):
    from raymlp.serving.app import MODEL_SERVER

    r = served.post(body={"model_id": "churn-online", "entity": {"customer_id": "c7"}})
    assert r.status_code == 200, r.text
    assert r.json()["probability"] == pytest.approx(
        local_probability(served, "online", example_features(7)), abs=1e-6
    )
    assert (
        served.post(
            body={"model_id": "churn-online", "entity": {"customer_id": "nobody"}}
        ).status_code
        == 404
    )
    stats = serve.get_deployment_handle(MODEL_SERVER, "svc").stats.remote()
    before = stats.result()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        "/v1/predictions",
                        headers={"x-api-key": KEYS["ops"]},
                        json={
                            "model_id": "churn-online",
                            "entity": {"customer_id": f"c{i}"},
                            "features": {"support_calls": i % 3},
                        },
                    )
                    for i in range(10, 34)
                )
            )

    answers = asyncio.run(burst())
    assert all(a.status_code == 200 for a in answers)
    after = serve.get_deployment_handle(MODEL_SERVER, "svc").stats.remote().result()
    calls = after["feature_calls"] - before["feature_calls"]
    assert 1 <= calls < 24  # batched: fewer lookups than requests
    # A repeated entity (new request fields, so not the gateway's answer cache) reads its
    # online features from the replica's near-cache: the same answer as the burst's.
    again = served.post(body={"model_id": "churn-online", "entity": {"customer_id": "c7"},
                              "features": {"support_calls": 1}})  # c7's own value
    assert again.status_code == 200 and again.json().get("route") != "cache", again.text
    assert again.json()["probability"] == r.json()["probability"]
    near = serve.get_deployment_handle(MODEL_SERVER, "svc").stats.remote().result()["near_cache"]
    assert near is not None and near["hits"] >= 1 and near["entries"] >= 1, near


def test_promotion_switches_without_redeploy_or_stale_cache(served):
    served.wait_primary()
    f = example_features(77)
    first = served.predict(f).json()
    assert first["model_version"] == "1"
    assert served.predict(f).json()["route"] == "cache"
    served.p.registry.promote("churn", 2, "production")
    # within seconds, the same input is answered by version 2, never from version 1's entry
    r = wait_for(
        lambda: (x := served.predict(f).json())["model_version"] == "2" and x,
        timeout=30,
        interval=0.1,
        message="version 2 answering after the promotion",
    )
    assert r["route"] == "primary"
    assert r["probability"] == pytest.approx(local_probability(served, "v2", f), abs=1e-6)
    for _ in range(5):
        assert served.predict(f).json()["model_version"] == "2"
    route = served.model()
    assert route["stable_version"] == 2 and route["standby_version"] == 1  # warm for rollback
    served.p.registry.rollback("churn", "production")
    wait_for(
        lambda: served.predict(f).json()["model_version"] == "1",
        timeout=30,
        interval=0.1,
        message="version 1 answering after the rollback",
    )


def test_blue_green_never_switches_to_a_version_that_fails_its_warm_up(served):
    served.wait_primary()
    served.control("v3", fail=True)  # loads, but its probe fails
    try:
        served.p.registry.promote("churn", 3, "production")
        wait_for(
            lambda: any("warm-up of churn:3" in x for x in served.model()["problems"]),
            timeout=30,
            interval=0.1,
            message="the failed warm-up of churn:3 reported",
        )
        assert served.model()["stable_version"] == 1  # the previous version keeps serving
        assert served.predict().json()["model_version"] == "1"
        served.heal()  # the periodic refresh (5 s here) warms it again, then switches
        wait_for(
            lambda: served.model()["stable_version"] == 3,
            timeout=40,
            interval=0.5,
            message="the switch to version 3",
        )
        assert served.predict().json()["model_version"] == "3"
    finally:
        served.heal()
        served.p.registry.rollback("churn", "production")
        wait_for(
            lambda: served.model()["stable_version"] == 1,
            timeout=40,
            interval=0.5,
            message="the rollback to version 1",
        )
        served.p.registry.set_stage("churn", 3, "staging")  # archived by the move: restore it


def test_killing_the_primary_replicas_mid_load_gives_fallbacks_and_no_5xx(served):
    served.wait_primary()

    def kill_model_servers() -> int:
        victims = [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if "ModelServer" in a["name"] and a["name"].startswith("SERVE_REPLICA")
        ]
        for a in victims:
            ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)
        return len(victims)

    async def load(seconds: float) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        deadline = time.monotonic() + seconds

        async def client(k: int, c: httpx.AsyncClient) -> None:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                r = await c.post(
                    "/v1/predictions",
                    headers={"x-api-key": KEYS["ops"]},
                    json={"model_id": "churn", "features": example_features(10_000 + k * 1000 + i)},
                )
                out.append((r.status_code, r.json().get("route", "")))

        async with httpx.AsyncClient(base_url=served.url, timeout=30) as c:
            loop = asyncio.get_running_loop()
            tasks = [asyncio.ensure_future(client(k, c)) for k in range(6)]
            await asyncio.sleep(1.0)
            assert await loop.run_in_executor(None, kill_model_servers) >= 1
            await asyncio.gather(*tasks)
        return out

    results = asyncio.run(load(5.0))
    statuses = Counter(s for s, _ in results)
    routes = Counter(r for _, r in results)
    assert statuses == {200: len(results)}, statuses  # zero 5xx (and no other error)
    assert routes["primary"] > 0 and routes["fallback"] > 0, routes
    served.wait_primary(timeout=120)  # Serve replaces the replica; the breaker closes again


# -- traffic: canary and shadow (the registry's traffic state) --------------------------------


def test_canary_split_within_5_points_sticky_and_promoted_by_steps(served):
    served.wait_primary()
    if served.p.registry.get("churn", version=2).stage == "archived":  # after a rollback
        served.p.registry.set_stage("churn", 2, "staging")
    # 10 %: the ceiling for a version that is not approved (issue 13: traffic is a promotion).
    route = served.p.serve.canary("churn", 2, 10, steps=[10, 50, 100])
    assert route["canary"] == {"version": 2, "weight": 10.0}
    bodies = [
        {
            "model_id": "churn",
            "features": {**example_features(20_000 + i), "customer_id": f"cust-{i}"},
        }
        for i in range(2000)
    ]
    answers = asyncio.run(post_many(served.url, bodies))
    versions = [a["model_version"] for a in answers]
    share = versions.count("2") / len(versions) * 100
    assert abs(share - 10) <= 5, share
    assert {a["route"] for a in answers if a["model_version"] == "2"} == {"canary"}
    # sticky: the same entities, other inputs, same side
    again = asyncio.run(
        post_many(
            served.url,
            [
                {
                    "model_id": "churn",
                    "features": {**example_features(50_000 + i), "customer_id": f"cust-{i}"},
                }
                for i in range(300)
            ],
        )
    )
    assert [a["model_version"] for a in again] == versions[:300]
    # the step plan: 20 -> 50, then the last step makes the canary stable (blue-green)
    assert served.p.serve.promote("churn")["canary"]["weight"] == 50.0
    final = served.p.serve.promote("churn")
    assert final["stable_version"] == 2 and final["canary"] is None
    assert final["standby_version"] == 1
    # one-command rollback: back to the warm standby
    assert served.p.serve.rollback("churn")["stable_version"] == 1
    assert served.predict().json()["model_version"] == "1"


def test_canary_rollback_sets_weight_zero(served):
    served.wait_primary()
    if served.p.registry.get("churn", version=2).stage == "archived":
        served.p.registry.set_stage("churn", 2, "staging")
    served.p.serve.canary("churn", 2, 100)
    assert served.predict().json()["route"] == "canary"
    route = served.p.serve.rollback("churn")
    assert route["canary"] is None
    assert served.predict().json()["route"] == "primary"
    assert served.p.registry.get_traffic("churn")["canary_weight"] == 0


def test_a_canary_keeps_its_traffic_across_a_replica_kill_and_owns_its_model_errors(served):
    """Issue 14 item 4: killing the model server replicas (infrastructure) leaves the canary's
    weight and share as they were; the canary's own failures (its model raising) are logged
    against the canary — ``<request id>.canary``, route canary, ``model_error`` — while the
    caller gets stable's answer; a slow canary step (a timeout: infrastructure) is not."""
    served.wait_primary()
    if served.p.registry.get("churn", version=3).stage == "archived":
        served.p.registry.set_stage("churn", 3, "staging")
    served.p.serve.canary("churn", 3, 10)
    handle = served.p.serve.handle()
    try:
        ids = [f"cust-{i}" for i in range(400)]

        def canary_share(seed: int) -> float:  # new inputs each time: no cache hits
            bodies = [
                {"model_id": "churn", "features": {**example_features(seed + i), "customer_id": c}}
                for i, c in enumerate(ids)
            ]
            answers = asyncio.run(post_many(served.url, bodies))
            return sum(a["route"] == "canary" for a in answers) / len(answers) * 100

        assert 4 <= canary_share(70_000) <= 16
        for a in ray.util.list_named_actors(all_namespaces=True):
            if "ModelServer" in a["name"] and a["name"].startswith("SERVE_REPLICA"):
                ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)
        served.wait_primary(timeout=120)
        assert served.model()["canary"] == {"version": 3, "weight": 10.0}
        assert served.p.registry.get_traffic("churn")["canary_weight"] == 10.0
        assert 4 <= canary_share(75_000) <= 16  # still routed, not just still configured

        canary_ids = list(itertools.islice((c for c in ids if _routes_to_canary(served, c)), 3))
        assert len(canary_ids) == 3
        served.control("v3", fail=True)
        for c in canary_ids:
            served.n += 1
            r = served.predict({**example_features(80_000 + served.n), "customer_id": c}).json()
            assert (r["route"], r["model_version"]) == ("primary", "1")  # stable answered
            recs = handle.recent_records.remote(2).result()
            own, answer = (recs[0], recs[1]) if recs[0]["route"] == "canary" else (recs[1], recs[0])
            assert own["request_id"] == f"{r['request_id']}.canary"
            assert (own["version"], own["status"], own["error_code"]) == (3, "error", "model_error")
            assert (answer["request_id"], answer["route"]) == (r["request_id"], "primary")
        served.control("v3", delay_s=0.8)  # beyond timeouts.primary_s: a timeout, not the model
        r = served.predict({**example_features(80_001), "customer_id": canary_ids[0]}).json()
        assert r["route"] == "primary"
        (last,) = handle.recent_records.remote(1).result()
        assert last["request_id"] == r["request_id"]  # no canary record for a timeout
        assert last["error_code"] in ("timeout", "breaker_open")
    finally:
        served.heal()
        served.p.serve.rollback("churn")
    served.wait_primary()


def _routes_to_canary(served: Any, customer_id: str) -> bool:
    served.n += 1
    r = served.predict({**example_features(90_000 + served.n), "customer_id": customer_id}).json()
    return r["route"] == "canary"


def test_a_pinned_cold_version_is_bounded_and_never_evicts_a_served_one(served):
    """Issue 14 item 6: a model server with room for 2 versions serves ``churn:1``; pinning
    versions 2 and 3 one after the other loads each in the free slot (evicting the other pin,
    never version 1); with both slots served, a pin is refused with 429, not an eviction."""
    from raymlp.serving.model_server import ModelServer

    cfg = {
        "name": "pins",
        "principal": "serving",
        "models": [{"name": "churn"}],
        "model_server": {"num_replicas": 1, "num_cpus": 0, "max_models_per_replica": 2},
    }
    app = serve.deployment(ModelServer, name="PinServer").bind(cfg, "primary", None)
    h = serve.run(app, name="pins", route_prefix=None)
    try:

        def warm(model_id: str, protect: list[str]) -> Any:
            return h.options(multiplexed_model_id=model_id, method_name="warmup").remote(
                protect=protect
            )

        warm("churn:1", []).result()
        warm("churn:2", ["churn:1"]).result()
        loaded = h.options(method_name="loaded_models")
        assert loaded.remote().result() == ["churn:1", "churn:2"]
        warm("churn:3", ["churn:1"]).result()  # full: the unprotected pin 2 makes room
        assert loaded.remote().result() == ["churn:1", "churn:3"]
        with pytest.raises(Exception) as e:
            warm("churn:2", ["churn:1", "churn:3"]).result()
        assert "no room to load 'churn:2'" in str(e.value)
        assert loaded.remote().result() == ["churn:1", "churn:3"]
    finally:
        serve.delete("pins")


def test_shadow_never_changes_a_response(served):
    served.wait_primary()
    served.control("v3", delay_s=0.6)  # the shadow version is slow...
    served.p.serve.shadow("churn", 3)
    try:
        feats = [example_features(60_000 + i) for i in range(12)]
        for f in feats:  # ...yet the caller's answer is the primary's (latency: bench/request_path.py)
            r = served.predict(f).json()
            assert (r["route"], r["model_version"]) == ("primary", "1")
            assert r["probability"] == pytest.approx(local_probability(served, "v1", f), abs=1e-6)
        stats = wait_for(
            lambda: (s := served.model()["shadow_stats"])["compared"] >= 3 and s,
            timeout=30,
            interval=0.1,
            message="3 shadow comparisons",
        )
        assert stats["version"] == 3 and stats["mean_abs_diff"] > 0
        served.control("v3", fail=True)  # a failing shadow changes nothing either
        r = served.predict().json()
        assert (r["route"], r["model_version"]) == ("primary", "1")
        wait_for(
            lambda: served.model()["shadow_stats"]["failed"] >= 1,
            timeout=30,
            interval=0.1,
            message="the failing shadow counted",
        )
    finally:
        served.heal()
        served.p.serve.shadow("churn", None)
    assert served.model()["shadow_version"] is None
