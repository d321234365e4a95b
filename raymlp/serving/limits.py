"""Bounded inputs of the HTTP API: body size, strict JSON numbers, nesting, per-tenant rates.

- :class:`BodyGuard`, an ASGI middleware in front of every route: a body larger than
  ``gateway.max_body_bytes`` answers 413 (checked on ``Content-Length`` before reading, and
  again while reading, for chunked bodies); a JSON body holding ``NaN``, ``Infinity``, or a
  number too large for a float64 (``1e400``, a 400-digit integer) answers 422 naming the
  field; one nested deeper than :data:`MAX_DEPTH` answers 400. Anything else passes through
  untouched (FastAPI answers bad JSON itself).
- :class:`TokenBucket` and :class:`RateLimiter`: per-tenant token buckets for requests and
  instances (a batch of n instances takes n), answering 429 with ``retry_after_s``.

Pure logic with an injectable clock (the buckets) and a plain ASGI class (the guard)::

    >>> find_non_finite(parse_json_strict(b'{"features": {"x": NaN}}'))
    ('features.x', 'NaN')
    >>> b = TokenBucket(rate=1.0, capacity=2.0, clock=lambda: 0.0)
    >>> b.take(2), b.take(1)
    (0.0, 1.0)
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from raymlp.config import ServeRateLimit
from raymlp.errors import BadRequestError, OverloadedError, RayMLPError, ValidationError
from raymlp.serving.errors import PayloadTooLargeError, error_body, retry_headers

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_DEPTH",
    "BodyGuard",
    "NonFinite",
    "parse_json_strict",
    "find_non_finite",
    "check_json_body",
    "set_body_limit",
    "TokenBucket",
    "RateLimiter",
]

#: The body limit before a gateway installed its own (``gateway.max_body_bytes``).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: Deepest nesting of objects and arrays a body may have (the API's own bodies need 4).
MAX_DEPTH = 32

_max_body_bytes = DEFAULT_MAX_BODY_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def set_body_limit(max_bytes: int) -> None:
    """Install the gateway's ``max_body_bytes`` for :class:`BodyGuard` of this replica.

    A module-level function, so it is pickled by reference and sets *this* module's global
    (the same pattern as :func:`raymlp.serving.api.set_authenticator`).
    """
    global _max_body_bytes
    _max_body_bytes = int(max_bytes)


# -- strict JSON ------------------------------------------------------------------------------


class NonFinite:
    """Stands in for a ``NaN``/``Infinity`` literal while a body is checked."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


def parse_json_strict(raw: bytes | str) -> Any:
    """``json.loads``, with ``NaN``/``Infinity``/``-Infinity`` kept as :class:`NonFinite`
    markers (Python's parser would turn them into floats no model can use) so that
    :func:`find_non_finite` can name their field. Raises ``ValueError`` on invalid JSON."""
    return json.loads(raw, parse_constant=NonFinite)


def find_non_finite(doc: Any) -> tuple[str, str] | None:
    """``(field path, why)`` of the first number that is not a finite float64, else None.

    Paths are dotted, list items by index (``instances.3.features.monthly_charges``), the
    way request errors name fields. Iterative: a deep document cannot exhaust the stack.

        >>> find_non_finite({"a": [1, 2, 10 ** 400]})
        ('a.2', 'an integer beyond the float64 range')
    """
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            why = _non_finite_reason(node)
            if why is not None:
                return path or "body", why
            continue
        for key, child in reversed(items):  # reversed: report the first offender first
            stack.append((f"{path}.{key}" if path else str(key), child))
    return None


def _non_finite_reason(value: Any) -> str | None:
    if isinstance(value, NonFinite):
        return value.literal
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} (beyond the float64 range)"
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return "an integer beyond the float64 range"
    return None


def _depth(doc: Any) -> int:
    """Nesting depth of objects and arrays (iterative)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            d += 1
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((c, d) for c in (node.values() if isinstance(node, dict) else node))
    return deepest


def check_json_body(raw: bytes) -> RayMLPError | None:
    """The error a JSON body earns before any route sees it, else None (also None for a body
    that is not JSON at all: the route's own parsing answers that with 400)."""
    try:
        doc = parse_json_strict(raw)
    except RecursionError:
        return BadRequestError(
            f"the body is nested too deeply (rule: at most {MAX_DEPTH} levels)",
            rule="nesting depth",
        )
    except ValueError:  # invalid JSON or text: left to the route (400 bad_request)
        return None
    if _depth(doc) > MAX_DEPTH:
        return BadRequestError(
            f"the body is nested too deeply (rule: at most {MAX_DEPTH} levels)",
            rule="nesting depth",
        )
    found = find_non_finite(doc)
    if found is None:
        return None
    field, why = found
    return ValidationError(
        f"{field}: {why} is not a finite number (rule: numbers must be finite float64 values; "
        "NaN and Infinity are not JSON)",
        field=field,
        value=why,
        rule="finite number",
    )


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would parse this body as JSON (no content type, or a JSON one)."""
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            main = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return main.endswith("/json") or main.endswith("+json")
    return True


class BodyGuard:
    """ASGI middleware enforcing the body size limit and strict JSON numbers (module
    docstring). Installed on the gateway's FastAPI app::

        app.add_middleware(BodyGuard)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = _max_body_bytes
        headers = dict(scope.get("headers") or ())
        rid = _request_id(headers.get(b"x-request-id"))
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False  # a broken header: the server itself refuses the request
            if too_big:
                await _answer(send, _too_large(limit), rid)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, _too_large(limit), rid)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        body = b"".join(chunks)
        if body and _is_json(scope):
            err = check_json_body(body)
            if err is not None:
                await _answer(send, err, rid)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _request_id(raw: bytes | None) -> str:
    return raw.decode("latin-1")[:128] if raw else uuid.uuid4().hex


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than {limit} bytes (rule: gateway.max_body_bytes)",
        limit_bytes=limit,
        rule="gateway.max_body_bytes",
    )


async def _answer(send: Send, exc: RayMLPError, rid: str) -> None:
    status, payload = error_body(exc, rid)
    raw = json.dumps(payload, default=str).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
        (b"connection", b"close"),  # the unread rest of a large body is not worth reading
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in retry_headers(status, payload).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


# -- rate limits ------------------------------------------------------------------------------


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; :meth:`take` spends them."""

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> float:
        self._refill()
        return self._tokens

    def wait_for(self, n: float) -> float:
        """Seconds until ``n`` tokens are there (0 when they are now); spends nothing."""
        self._refill()
        missing = n - self._tokens
        if missing <= 0:
            return 0.0
        if n > self.capacity:
            return math.inf  # never: the bucket cannot hold that many
        return missing / self.rate

    def take(self, n: float = 1.0) -> float:
        """Spend ``n`` tokens and return 0.0, or spend nothing and return the seconds to wait."""
        wait = self.wait_for(n)
        if wait == 0.0:
            self._tokens -= n
        return wait


class RateLimiter:
    """Per-tenant request and instance buckets of one gateway replica.

    Tenants are the configured ones (callers are authenticated before this runs), so the
    number of buckets is bounded by the config, never by traffic::

        >>> rl = RateLimiter(ServeRateLimit(enabled=True, requests_per_s=1, requests_burst=1))
        >>> rl.admit("acme", 1)
        >>> rl.admit("acme", 1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        raymlp.errors.OverloadedError: tenant 'acme' is over its rate limit ...
    """

    def __init__(self, settings: ServeRateLimit, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self._buckets: dict[str, tuple[TokenBucket, TokenBucket]] = {}
        self.refused = 0

    def _pair(self, tenant: str) -> tuple[TokenBucket, TokenBucket]:
        pair = self._buckets.get(tenant)
        if pair is None:
            s = self.settings.rates(tenant)
            pair = self._buckets[tenant] = (
                TokenBucket(s.requests_per_s, s.requests_burst, self._clock),
                TokenBucket(s.instances_per_s, s.instances_burst, self._clock),
            )
        return pair

    def admit(self, tenant: str | None, instances: int) -> None:
        """Take one request and ``instances`` instances of ``tenant``'s budget, or raise
        OverloadedError (429) with ``retry_after_s``; a refused request spends nothing."""
        if not self.settings.enabled:
            return
        name = tenant or ""
        requests, items = self._pair(name)
        wait = max(requests.wait_for(1), items.wait_for(instances))
        if wait > 0:
            self.refused += 1
            which = "requests" if requests.wait_for(1) > 0 else "instances"
            rate = requests.rate if which == "requests" else items.rate
            when = (
                f"retry in {math.ceil(wait)} s"
                if math.isfinite(wait)
                else "this request alone exceeds the burst: send fewer instances"
            )
            raise OverloadedError(
                f"tenant {name!r} is over its rate limit of {rate:g} {which} per second "
                f"(rule: gateway.rate_limit.{which}_per_s); {when}",
                reason="rate_limit",
                tenant=name,
                limit=f"{which}_per_s",
                retry_after_s=math.ceil(wait) if math.isfinite(wait) else None,
            )
        requests.take(1)
        items.take(instances)
