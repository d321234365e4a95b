"""One error schema for every HTTP answer that is not a prediction.

Every failure the gateway answers is ``{"error": {"code", "message", "details"}}`` with the
status of its :mod:`raymlp.errors` class. Statuses are limited to what the HTTP contract
names (400, 401, 403, 404, 409, 413, 422, 429, 503): another 4xx becomes 400, anything else —
a bug, a Ray error — becomes 503 ``unavailable`` with the request id, never a stack trace and
never a bare 500. A 429 carries ``Retry-After``::

    >>> status, body = error_body(NotFoundError("model 'x' is not served", kind="model", name="x"))
    >>> status, body["error"]["code"]
    (404, 'not_found')
"""

from __future__ import annotations

import json
import logging
from typing import Any

from raymlp.errors import (
    BadRequestError,
    OverloadedError,
    RayMLPError,
    UnavailableError,
    unwrap_ray_error,
)

__all__ = [
    "HTTP_STATUSES",
    "PayloadTooLargeError",
    "error_body",
    "error_response",
    "retry_headers",
    "to_raymlp_error",
    "http_error",
]

logger = logging.getLogger(__name__)

#: The statuses the HTTP contract allows for errors.
HTTP_STATUSES = frozenset({400, 401, 403, 404, 409, 413, 422, 429, 503})


class PayloadTooLargeError(BadRequestError):
    """A request body beyond ``gateway.max_body_bytes`` (413). Context: ``limit_bytes``.

    A :class:`~raymlp.errors.BadRequestError` (so code that catches those still does); its
    own code and status tell the caller to send less, not to fix the syntax.
    """

    code = "payload_too_large"
    http_status = 413


def retry_headers(status: int, payload: dict[str, Any]) -> dict[str, str]:
    """``{"Retry-After": seconds}`` for a 429 (``details.retry_after_s``, else 1), else {}."""
    if status != 429:
        return {}
    details = payload.get("error", {}).get("details")
    wait = details.get("retry_after_s") if isinstance(details, dict) else None
    seconds = int(wait) if isinstance(wait, (int, float)) and wait >= 1 else 1
    return {"Retry-After": str(seconds)}


def to_raymlp_error(exc: BaseException, request_id: str | None = None) -> RayMLPError:
    """The raymlp error an exception stands for (unknown ones: UnavailableError, logged)."""
    cause = unwrap_ray_error(exc)
    if isinstance(cause, RayMLPError):
        return cause
    try:  # Serve's load shedding, without importing Serve at module import time
        from ray.serve.exceptions import BackPressureError

        if isinstance(cause, BackPressureError):
            return OverloadedError(
                "the model servers are at capacity; retry later", reason="backpressure"
            )
    except ImportError:  # pragma: no cover
        pass
    logger.error("request %s failed: %s: %s", request_id, type(exc).__name__, exc)
    return UnavailableError(
        "the service could not answer this request",
        request_id=request_id,
        reason=type(exc).__name__,
    )


def error_body(exc: BaseException, request_id: str | None = None) -> tuple[int, dict[str, Any]]:
    """``(status, {"error": {...}})`` for any exception, with a contract status."""
    err = to_raymlp_error(exc, request_id)
    status = err.http_status
    if status not in HTTP_STATUSES:
        if 400 <= status < 500:
            status = 400  # e.g. a conflict: the caller's request cannot be done as asked
        else:
            err = UnavailableError(err.message, **err.context)
            status = err.http_status
    body = err.to_dict()
    if request_id is not None:
        details = body["error"]["details"]
        if not isinstance(details, dict):
            details = body["error"]["details"] = {}
        details.setdefault("request_id", request_id)
    return status, body


def error_response(exc: BaseException, request_id: str | None = None) -> Any:
    """A Starlette JSON response for ``exc`` (429 carries ``Retry-After``)."""
    from starlette.responses import Response

    status, body = error_body(exc, request_id)
    return Response(
        json.dumps(body, default=str),
        status_code=status,
        media_type="application/json",
        headers=retry_headers(status, body) or None,
    )


def http_error(status: int, detail: Any) -> RayMLPError:
    """The raymlp error for a framework-level HTTP error (unknown route, wrong method)."""
    from raymlp.errors import NotFoundError

    text = detail if isinstance(detail, str) else "request failed"
    if status == 404:
        return NotFoundError(f"no such endpoint ({text})", kind="endpoint")
    if status == 405:
        return BadRequestError(f"method not allowed ({text})", rule="see /openapi.json")
    if status == 413:
        return PayloadTooLargeError(text, rule="gateway.max_body_bytes")
    if 400 <= status < 500:
        return BadRequestError(text)
    return UnavailableError(text)
