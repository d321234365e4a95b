"""Bounded HTTP inputs without Ray: the body guard on a real FastAPI app (over httpx's ASGI
transport), strict JSON numbers, token buckets, per-tenant rate limits, the feedback ledger and
their config rules."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pydantic
import pytest
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse

from raymlp.config.serving import ServeGatewaySettings, ServeRateLimit
from raymlp.errors import BadRequestError, ConflictError, NotFoundError, OverloadedError
from raymlp.errors import ValidationError as RMValidationError
from raymlp.serving.errors import PayloadTooLargeError, error_body
from raymlp.serving.ledger import RequestLedger
from raymlp.serving.limits import (
    MAX_DEPTH,
    BodyGuard,
    RateLimiter,
    TokenBucket,
    check_json_body,
    find_non_finite,
    parse_json_strict,
    set_body_limit,
)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -- the body guard on a real ASGI app ----------------------------------------------------------


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyGuard)
    seen: list[Any] = []

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(body)
        return JSONResponse({"got": body})

    app.state.seen = seen
    return app


def _post(app: FastAPI, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post(
                "/echo",
                content=content,
                headers={"content-type": "application/json", **(headers or {})},
            )

    return asyncio.run(go())


@pytest.fixture
def limit_4k():
    set_body_limit(4096)
    yield 4096
    set_body_limit(1024 * 1024)


def _is_error_schema(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


def test_a_body_over_the_limit_is_413_and_never_reaches_the_route(limit_4k):
    app = _app()
    big = json.dumps({"x": "a" * 5000}).encode()
    err = _is_error_schema(_post(app, big), 413, "payload_too_large")
    assert err["details"]["limit_bytes"] == 4096 and "max_body_bytes" in err["message"]
    assert app.state.seen == []
    ok = _post(app, json.dumps({"x": "a" * 100}).encode())
    assert ok.status_code == 200 and app.state.seen == [{"x": "a" * 100}]


def test_a_chunked_body_over_the_limit_is_413_too(limit_4k):
    app = _app()

    async def chunks():
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: only counting the bytes can tell

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post(
                "/echo", content=chunks(), headers={"content-type": "application/json"}
            )

    _is_error_schema(asyncio.run(go()), 413, "payload_too_large")
    assert app.state.seen == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"features": {"monthly_charges": NaN}}', "features.monthly_charges"),
        (b'{"features": {"monthly_charges": Infinity}}', "features.monthly_charges"),
        (b'{"features": {"monthly_charges": -Infinity}}', "features.monthly_charges"),
        (b'{"features": {"monthly_charges": 1e400}}', "features.monthly_charges"),
        (
            b'{"instances": [{"features": {}}, {"features": {"x": ' + b"9" * 400 + b"}}]}",
            "instances.1.features.x",
        ),
        (b'{"label": NaN}', "label"),
    ],
)
def test_non_finite_numbers_are_422_naming_the_field(raw, field):
    app = _app()
    err = _is_error_schema(_post(app, raw), 422, "validation_error")
    assert err["details"]["field"] == field and err["details"]["rule"] == "finite number"
    assert app.state.seen == []


def test_finite_edge_numbers_pass_untouched():
    app = _app()
    raw = b'{"a": 1.7976931348623157e308, "b": -1e-320, "c": ' + b"9" * 300 + b', "d": true}'
    r = _post(app, raw)
    assert r.status_code == 200, r.text
    assert app.state.seen[0]["c"] == int("9" * 300)


def test_deep_nesting_is_400_not_a_crash():
    app = _app()
    raw = b"[" * 100_000 + b"]" * 100_000
    _is_error_schema(_post(app, raw), 400, "bad_request")
    raw = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    _is_error_schema(_post(app, raw), 400, "bad_request")
    assert app.state.seen == []


def test_invalid_json_is_left_to_the_route():
    # the guard only refuses what it is sure of; FastAPI's own parser answers bad JSON
    assert check_json_body(b'{"model_id": ') is None
    assert check_json_body(b"\xff\xfe") is None


def test_find_non_finite_reports_the_first_offender_in_document_order():
    doc = parse_json_strict(b'{"a": 1, "b": [2, NaN, Infinity], "c": 1e999}')
    assert find_non_finite(doc) == ("b.1", "NaN")
    assert find_non_finite(parse_json_strict(b"NaN")) == ("body", "NaN")
    assert find_non_finite({"ok": [1, 2.5, "NaN", None, False]}) is None


# -- token buckets and rate limits ------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_and_caps_at_its_size():
    clock = Clock()
    b = TokenBucket(rate=2.0, capacity=4.0, clock=clock)
    assert b.take(4) == 0.0
    assert b.take(1) == pytest.approx(0.5)  # refused: nothing spent
    clock.t = 0.5
    assert b.take(1) == 0.0
    clock.t = 100.0
    assert b.available() == 4.0
    assert b.take(5) == float("inf")  # more than the bucket holds: never


def test_rate_limiter_counts_instances_and_isolates_tenants():
    clock = Clock()
    rl = RateLimiter(
        ServeRateLimit(
            enabled=True,
            requests_per_s=100,
            requests_burst=100,
            instances_per_s=10,
            instances_burst=10,
        ),
        clock=clock,
    )
    rl.admit("acme", 10)  # one batch of 10 spends the whole instance budget
    with pytest.raises(OverloadedError) as e:
        rl.admit("acme", 1)
    assert e.value.context["retry_after_s"] == 1 and e.value.context["limit"] == "instances_per_s"
    status, body = error_body(e.value)
    assert status == 429 and body["error"]["details"]["tenant"] == "acme"
    rl.admit("globex", 10)  # another tenant is untouched
    clock.t = 1.0
    rl.admit("acme", 10)
    assert rl.refused == 1


def test_rate_limiter_per_tenant_rates_and_off_by_default():
    clock = Clock()
    rl = RateLimiter(
        ServeRateLimit(
            enabled=True, tenants={"initech": {"requests_per_s": 1, "requests_burst": 2}}
        ),
        clock=clock,
    )
    rl.admit("initech", 1)
    rl.admit("initech", 1)
    with pytest.raises(OverloadedError, match="1 requests per second"):
        rl.admit("initech", 1)
    for _ in range(150):
        rl.admit("acme", 1)  # the default rates: 200 at once
    off = RateLimiter(ServeRateLimit(), clock=clock)
    for _ in range(10_000):
        off.admit("acme", 1000)


def test_a_refused_request_spends_nothing():
    clock = Clock()
    rl = RateLimiter(
        ServeRateLimit(
            enabled=True, requests_per_s=1, requests_burst=1, instances_per_s=5, instances_burst=5
        ),
        clock=clock,
    )
    with pytest.raises(OverloadedError):
        rl.admit("acme", 6)  # over the instance budget: the request token stays
    rl.admit("acme", 5)


# -- config ----------------------------------------------------------------------------------------


def test_gateway_limits_have_safe_defaults_and_rules():
    g = ServeGatewaySettings()
    assert g.max_body_bytes == 1024 * 1024 and g.max_instances_per_request == 1000
    assert g.rate_limit.enabled is False
    with pytest.raises(
        pydantic.ValidationError, match="instances_burst 10.0 is below max_instances_per_request"
    ):
        ServeGatewaySettings.model_validate(
            {"rate_limit": {"enabled": True, "tenants": {"acme": {"instances_burst": 10}}}}
        )
    with pytest.raises(pydantic.ValidationError, match="tenant name 'Bad Name'"):
        ServeRateLimit.model_validate({"tenants": {"Bad Name": {}}})
    with pytest.raises(pydantic.ValidationError, match="max_body_bytes"):
        ServeGatewaySettings.model_validate({"max_body_bytes": 10})


# -- the feedback ledger ------------------------------------------------------------------------


def test_ledger_binds_a_label_to_its_tenant_and_model_once():
    led = RequestLedger(max_entries=3)
    led.note("r1", tenant="acme", model="churn")
    for tenant, model in (("globex", None), ("acme", "other")):
        with pytest.raises(NotFoundError):
            led.claim("r1", tenant=tenant, admin=False, model=model)
    with pytest.raises(NotFoundError):
        led.claim("nope", tenant="acme", admin=False, model=None)
    led.claim("r1", tenant="acme", admin=False, model="churn")
    with pytest.raises(ConflictError):  # a label being stored counts
        led.claim("r1", tenant="acme", admin=False, model=None)
    led.release("r1")  # the store failed: the id takes a label again
    led.claim("r1", tenant="globex", admin=True, model=None)
    led.commit("r1")
    with pytest.raises(ConflictError):
        led.claim("r1", tenant="acme", admin=False, model=None)


def test_ledger_is_bounded_oldest_first():
    led = RequestLedger(max_entries=2)
    for rid in ("a", "b", "c"):
        led.note(rid, tenant="acme", model="m")
    assert len(led) == 2
    with pytest.raises(NotFoundError):
        led.claim("a", tenant="acme", admin=False, model=None)
    led.claim("c", tenant="acme", admin=False, model=None)


def test_payload_too_large_is_a_bad_request_with_its_own_status():
    err = PayloadTooLargeError("too big", limit_bytes=10)
    assert isinstance(err, BadRequestError) and error_body(err)[0] == 413
    assert not isinstance(err, RMValidationError)
