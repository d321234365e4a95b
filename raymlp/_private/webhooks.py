"""The one webhook signer/verifier and sender of raymlp (registry events, monitor alerts).

A :class:`WebhookSender` serves one endpoint: :meth:`~WebhookSender.put` only enqueues (a
bounded queue; on overflow the oldest or the newest delivery is dropped, as the caller
chooses); one daemon thread POSTs the queued bodies in order, signing each with HMAC-SHA256
under the endpoint's secret and retrying 5xx/408/429/network errors with exponential backoff
and jitter. Each delivery ends in exactly one :class:`Outcome` (delivered, failed after N
attempts, or dropped) handed to the caller's callback, which does the metrics, logging or
events::

    sender = WebhookSender(hook, on_outcome=lambda o: print(o.status, o.attempts))
    sender.put(Delivery(body=b'{"kind": "x"}', headers={"Content-Type": "application/json"}))

The wire format belongs to the caller (body bytes and headers); the sender only adds
:data:`SIGNATURE_HEADER` (``sha256=<hex HMAC-SHA256 of the body>``), checked by receivers with
:func:`verify_signature`. The endpoint is read duck-typed: ``url``, ``secret_env``,
``timeout_s``, ``max_retries``, ``backoff_s`` (``raymlp.config.WebhookTarget``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "SIGNATURE_HEADER",
    "sign",
    "verify_signature",
    "Delivery",
    "Outcome",
    "WebhookSender",
]

SIGNATURE_HEADER = "X-RayMLP-Signature"
#: HTTP statuses worth retrying (server errors, request timeout, rate limiting).
_RETRY_STATUSES = (408, 429)
_JITTER = 0.25


def sign(secret: str | bytes, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``body`` under ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of a :data:`SIGNATURE_HEADER` value."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body), header)


@dataclass
class Delivery:
    """One POST: the body, the caller's headers and ``meta`` handed back in the outcome."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    meta: Any = None


@dataclass
class Outcome:
    """How a delivery ended: ``delivered``, ``failed`` (after ``attempts`` POSTs; 0 when it
    was never sent, e.g. its secret is missing) or ``dropped`` (queue overflow)."""

    status: Literal["delivered", "failed", "dropped"]
    delivery: Delivery
    attempts: int = 0
    reason: str | None = None


class WebhookSender:
    """Delivers queued bodies to one endpoint from one background thread.

    Args:
        target: the endpoint (``url``, ``secret_env``, ``timeout_s``, ``max_retries``,
            ``backoff_s``).
        on_outcome: ``fn(Outcome)``, called once per delivery (from the sender's thread, or
            from :meth:`put` for a drop).
        env: where ``secret_env`` is looked up at delivery time (default ``os.environ``).
        require_secret: with a ``secret_env`` that is not set, fail the delivery (True) or
            send it unsigned (False).
        queue_size: pending deliveries kept.
        overflow: on a full queue, drop the ``oldest`` pending delivery or the ``newest``.
        max_delay_s: cap of one retry delay (None: uncapped).
        name: the thread name.
    """

    def __init__(
        self,
        target: Any,
        *,
        on_outcome: Callable[[Outcome], Any] | None = None,
        env: Mapping[str, str] | None = None,
        require_secret: bool = True,
        queue_size: int = 10_000,
        overflow: Literal["oldest", "newest"] = "oldest",
        max_delay_s: float | None = None,
        name: str = "raymlp-webhook",
    ) -> None:
        self.target = target
        self._on_outcome = on_outcome or (lambda outcome: None)
        self._env = env if env is not None else os.environ
        self.require_secret = require_secret
        self.queue_size = queue_size
        self.overflow = overflow
        self.max_delay_s = max_delay_s
        self._queue: deque[Delivery] = deque()
        self._cond = threading.Condition()
        self._closed = False  # stop now (pending deliveries are abandoned)
        self._draining = False  # stop once the queue is empty
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, delivery: Delivery) -> None:
        """Queue ``delivery``; returns at once (a full queue drops one and reports it)."""
        dropped: Delivery | None = None
        with self._cond:
            if len(self._queue) >= self.queue_size:
                if self.overflow == "newest":
                    dropped = delivery
                else:
                    dropped = self._queue.popleft()
            if dropped is not delivery:
                self._queue.append(delivery)
                self._cond.notify_all()  # the worker, and any wait_idle() caller
        if dropped is not None:
            self._on_outcome(Outcome("dropped", dropped, reason="queue full"))

    def idle(self) -> bool:
        """Nothing queued and nothing being delivered (outcome callbacks included)."""
        with self._cond:
            return not self._queue and not self._busy

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until :meth:`idle` (True) or the timeout passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def close(self, *, drain: bool = False) -> None:
        """Stop the thread: at once (``drain=False``: the current attempt finishes, pending
        deliveries are abandoned) or after delivering everything queued (``drain=True``)."""
        with self._cond:
            if drain:
                self._draining = True
            else:
                self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed and not self._draining:
                    self._cond.wait()
                if self._closed or not self._queue:
                    return
                delivery = self._queue.popleft()
                self._busy = True
            try:
                outcome = self._deliver(delivery)
                if outcome is not None:
                    self._on_outcome(outcome)
            except Exception:  # noqa: BLE001, S110 - a broken callback must not stop the next
                pass
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _delay(self, attempt: int) -> float:
        delay = float(self.target.backoff_s) * (2**attempt)
        if self.max_delay_s is not None:
            delay = min(delay, self.max_delay_s)
        return delay * (1 + random.random() * _JITTER)

    def _deliver(self, delivery: Delivery) -> Outcome | None:
        """POST with retries; None when closed before an outcome."""
        target = self.target
        headers = dict(delivery.headers)
        secret_env = getattr(target, "secret_env", None)
        if secret_env:
            secret = self._env.get(secret_env)
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, delivery.body)
            elif self.require_secret:
                return Outcome(
                    "failed", delivery, reason=f"secret env {secret_env} is not set (not sent)"
                )
        retries = int(target.max_retries)
        for attempt in range(retries + 1):
            if self._closed:
                return None
            retry = True
            try:
                req = urllib.request.Request(
                    target.url, data=delivery.body, headers=headers, method="POST"
                )
                with urllib.request.urlopen(req, timeout=target.timeout_s) as resp:  # noqa: S310
                    resp.read()
                return Outcome("delivered", delivery, attempts=attempt + 1)
            except urllib.error.HTTPError as e:
                retry = e.code >= 500 or e.code in _RETRY_STATUSES  # a 4xx will not get better
                reason = f"HTTP {e.code}"
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                reason = f"{type(e).__name__}: {e}"
            except Exception as e:  # noqa: BLE001 - e.g. a malformed response: not retried
                retry = False
                reason = f"{type(e).__name__}: {e}"
            if not retry or attempt == retries:
                return Outcome("failed", delivery, attempts=attempt + 1, reason=reason)
            with self._cond:
                self._cond.wait_for(lambda: self._closed, timeout=self._delay(attempt))
        raise AssertionError("unreachable")
