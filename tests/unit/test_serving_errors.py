"""One error schema, only the contract's statuses, never a stack trace or a bare 500."""

from __future__ import annotations

import json

import pytest
from ray.serve.exceptions import BackPressureError

from raymlp.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ModelError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RayMLPError,
    StorageError,
    UnavailableError,
    ValidationError,
)
from raymlp.serving.errors import HTTP_STATUSES, error_body, error_response, http_error


@pytest.mark.parametrize(
    "exc,status,code",
    [
        (BadRequestError("bad json"), 400, "bad_request"),
        (AuthenticationError("no key"), 401, "unauthenticated"),
        (PermissionDeniedError("other tenant"), 403, "permission_denied"),
        (NotFoundError("no model", kind="model", name="x"), 404, "not_found"),
        (
            ValidationError("feature 'x' must be int64", field="x", rule="int64"),
            422,
            "validation_error",
        ),
        (OverloadedError("full"), 429, "overloaded"),
        (UnavailableError("down"), 503, "unavailable"),
        (StorageError("disk"), 503, "storage_error"),
        (ModelError("the model raised", model="churn:2"), 503, "model_error"),
        (ConflictError("moved"), 409, "conflict"),
        (RayMLPError("generic"), 503, "unavailable"),
        (RuntimeError("Traceback (most recent call last): secret"), 503, "unavailable"),
        (BackPressureError(num_queued_requests=10, max_queued_requests=10), 429, "overloaded"),
    ],
)
def test_every_error_maps_to_a_contract_status(exc, status, code):
    got, body = error_body(exc, "rid-1")
    assert got == status and got in HTTP_STATUSES
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["details"]["request_id"] == "rid-1"
    assert "Traceback" not in json.dumps(body) and "secret" not in json.dumps(body)


def test_validation_error_names_the_field():
    _, body = error_body(
        ValidationError("feature 'tenure' is missing", field="tenure", rule="required")
    )
    assert body["error"]["details"] == {"field": "tenure", "rule": "required"}


def test_response_carries_json_and_retry_after_on_429():
    r = error_response(OverloadedError("full"), "r")
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.media_type == "application/json"
    assert json.loads(r.body)["error"]["code"] == "overloaded"


def test_framework_errors():
    assert http_error(404, "Not Found").http_status == 404
    assert http_error(405, "Method Not Allowed").http_status == 400
    assert http_error(500, "boom").http_status == 503


def test_an_exception_that_escapes_a_route_is_a_503_in_the_schema_not_a_bare_500():
    """The gateway app's catch-all (issue 14): a bug or a Ray error raised outside any route's
    own handling still answers in the error schema, with the caller's request id."""
    import asyncio

    import httpx
    from ray.exceptions import ActorDiedError

    from raymlp.serving.api import app

    @app.get("/__test/boom")
    async def boom() -> None:
        raise ActorDiedError()

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/__test/boom", headers={"x-request-id": "rid-7"})

    try:
        r = asyncio.run(call())
    finally:
        app.router.routes[:] = [
            x for x in app.router.routes if getattr(x, "path", None) != "/__test/boom"
        ]
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == "unavailable" and err["details"]["request_id"] == "rid-7"
    assert err["details"]["reason"] == "ActorDiedError"
    assert "Traceback" not in r.text
