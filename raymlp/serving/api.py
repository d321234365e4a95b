"""The FastAPI application of the gateway: the app object, its error handlers (every error
in one schema), the body guard (size limit, strict JSON numbers: :mod:`raymlp.serving.limits`)
and the authentication dependencies.

The routes themselves are methods of :class:`~raymlp.serving.gateway.Gateway` (Serve's
class-based ingress); they are registered on :data:`app` there.
"""

# No ``from __future__ import annotations``: FastAPI reads annotations at runtime.
import json
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from raymlp._version import __version__
from raymlp.config import Principal
from raymlp.errors import (
    BadRequestError,
    RayMLPError,
    UnavailableError,
    ValidationError,
    error_for_code,
)
from raymlp.serving.auth import Authenticator, api_key_from_headers
from raymlp.serving.errors import error_response, http_error, retry_headers
from raymlp.serving.limits import BodyGuard
from raymlp.serving.schemas import ErrorResponse

__all__ = [
    "app",
    "ERROR_RESPONSES",
    "json_response",
    "request_id",
    "set_authenticator",
    "principal",
    "optional_principal",
    "request_error",
    "raise_remote",
]

#: OpenAPI ``responses=`` of every endpoint that can fail (413: a body over the size limit).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 413, 422, 429, 503)
}

app = FastAPI(
    title="raymlp serving API",
    version=__version__,
    description="Predictions with canary/shadow routing, a fallback chain, circuit breakers "
    'and a response cache. Every error is {"error": {"code", "message", "details"}}.',
)
# Before any route: oversized bodies (413) and non-finite numbers (422) never reach one.
app.add_middleware(BodyGuard)

#: The Authenticator of this replica's gateway (one gateway per replica process).
_AUTH: Authenticator | None = None


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response; an error body (``{"error": ...}``) with 429 carries ``Retry-After``."""
    headers = retry_headers(status, data) if status == 429 and isinstance(data, dict) else None
    return Response(
        json.dumps(data, default=str),
        status_code=status,
        media_type="application/json",
        headers=headers or None,
    )


def request_id(request: Request) -> str:
    """A new id for a prediction. Never the caller's ``X-Request-ID``: feedback is bound to
    the id, so a caller must not be able to reuse (or collide with) another request's id."""
    return uuid.uuid4().hex


def set_authenticator(auth: Authenticator) -> None:
    """Install the gateway's authenticator for :func:`principal`.

    A module-level function, so it is pickled by reference and sets *this* module's global
    (the deployment class itself travels to replicas by value, with copies of its globals).
    """
    global _AUTH
    _AUTH = auth


async def principal(request: Request) -> Principal:
    """Dependency: the authenticated caller (401 otherwise). Runs before body validation."""
    if _AUTH is None:
        raise UnavailableError("the gateway is starting")
    return _AUTH.authenticate(request.headers)


async def optional_principal(request: Request) -> Principal | None:
    """Dependency: the authenticated caller when the request carries a key (a wrong key is
    still 401), else None — for endpoints that answer anonymous callers with less."""
    if _AUTH is None:
        raise UnavailableError("the gateway is starting")
    if _AUTH.enabled and api_key_from_headers(request.headers) is None:
        return None
    return _AUTH.authenticate(request.headers)


def request_error(errors: list[Any]) -> RayMLPError:
    """The raymlp error for pydantic's errors on a request body (400 or 422 naming the field)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or "body"
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    kind = first.get("type", "")
    if kind == "json_invalid":
        return BadRequestError(f"the body is not valid JSON: {msg}", rule="JSON")
    if not loc and kind in ("model_attributes_type", "dict_type", "missing"):
        return BadRequestError(
            "the body must be a JSON object (see /openapi.json)", rule="JSON object"
        )
    if kind == "extra_forbidden":
        msg = f"unknown field {field!r} (rule: only documented fields)"
    return ValidationError(f"{field}: {msg}", field=field, rule=kind)


def raise_remote(out: dict[str, Any]) -> dict[str, Any]:
    """A model server's answer, or the error it reported (re-raised as its raymlp class)."""
    err = out.get("error")
    if err is None:
        return out
    details = err.get("details") if isinstance(err.get("details"), dict) else {}
    raise error_for_code(err.get("code", ""))(err.get("message", "model error"), **details)


@app.exception_handler(RayMLPError)
async def _raymlp_error(request: Request, exc: RayMLPError) -> Response:
    return error_response(exc, request.headers.get("x-request-id"))


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    return error_response(request_error(list(exc.errors())), request.headers.get("x-request-id"))


@app.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # A bug or a Ray error that escaped a route: still our schema (503 ``unavailable`` with the
    # request id), never Starlette's plain-text 500. ``to_raymlp_error`` logs it.
    return error_response(exc, request.headers.get("x-request-id"))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return error_response(
        http_error(exc.status_code, exc.detail), request.headers.get("x-request-id")
    )
