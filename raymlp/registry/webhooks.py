"""Webhook delivery of registry events: HMAC-signed, retried with backoff, never blocking.

:meth:`WebhookDispatcher.publish` only enqueues; one daemon thread per endpoint POSTs each event
(JSON) in order, retrying 5xx/429/timeouts with exponential backoff and jitter. The body is
signed with HMAC-SHA256 under the secret read from the endpoint's ``secret_env`` variable::

    POST /hook
    Content-Type: application/json
    X-RayMLP-Event: alias_moved
    X-RayMLP-Delivery: 42-0
    X-RayMLP-Signature: sha256=5d1c...      # hmac(secret, body, sha256)

A receiver checks it with :func:`verify_signature`::

    if not verify_signature(secret, request.body, request.headers["X-RayMLP-Signature"]):
        abort(401)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from typing import Any

from raymlp.config import RegistryWebhook
from raymlp.registry.events import Event

__all__ = ["sign", "verify_signature", "WebhookDispatcher", "SIGNATURE_HEADER"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-RayMLP-Signature"
_MAX_QUEUE = 10_000


def sign(secret: str | bytes, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``body`` under ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of a ``X-RayMLP-Signature`` header."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body), header)


def _wants(hook: RegistryWebhook, event: Event) -> bool:
    if "*" not in hook.events and event.kind not in hook.events:
        return False
    return not hook.models or (event.model is not None and event.model in hook.models)


class _Endpoint:
    """One webhook URL: its queue and its delivery thread."""

    def __init__(
        self,
        index: int,
        hook: RegistryWebhook,
        env: Mapping[str, str],
        stats: dict[str, int],
        lock: threading.Lock,
    ) -> None:
        self.index = index
        self.hook = hook
        self.env = env
        self.stats = stats
        self.stats_lock = lock
        self.queue: deque[dict[str, Any]] = deque()
        self.cond = threading.Condition()
        self.closed = False
        self._busy = False
        self.thread = threading.Thread(
            target=self._run, name=f"raymlp-webhook-{index}", daemon=True
        )
        self.thread.start()

    def _count(self, key: str) -> None:
        with self.stats_lock:
            self.stats[key] = self.stats.get(key, 0) + 1

    def put(self, event: dict[str, Any]) -> None:
        with self.cond:
            if len(self.queue) >= _MAX_QUEUE:
                dropped = self.queue.popleft()
                self._count("dropped")
                logger.warning(
                    "webhook %s: queue full, dropped event seq %s",
                    self.hook.url,
                    dropped.get("seq"),
                )
            self.queue.append(event)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()

    def idle(self) -> bool:
        with self.cond:
            return not self.queue and not self._busy

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                event = self.queue.popleft()
                self._busy = True
            try:
                self._deliver(event)
            finally:
                with self.cond:
                    self._busy = False

    def _deliver(self, event: dict[str, Any]) -> None:
        hook = self.hook
        body = json.dumps(event, sort_keys=True, default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "raymlp-registry",
            "X-RayMLP-Event": str(event.get("kind")),
            "X-RayMLP-Delivery": f"{event.get('seq')}-{self.index}",
        }
        if hook.secret_env:
            secret = self.env.get(hook.secret_env)
            if not secret:
                logger.error(
                    "webhook %s: secret env %s is not set in the registry process; "
                    "not delivering unsigned",
                    hook.url,
                    hook.secret_env,
                )
                self._count("failed")
                return
            headers[SIGNATURE_HEADER] = sign(secret, body)
        for attempt in range(hook.max_retries + 1):
            if self.closed:
                return
            self._count("attempts")
            retry = True
            try:
                req = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=hook.timeout_s) as resp:
                    resp.read()
                self._count("delivered")
                return
            except urllib.error.HTTPError as e:
                retry = e.code >= 500 or e.code in (408, 429)
                reason = f"HTTP {e.code}"
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                reason = f"{type(e).__name__}: {e}"
            if not retry or attempt == hook.max_retries:
                logger.warning(
                    "webhook %s: giving up on event seq %s after %d attempt(s): %s",
                    hook.url,
                    event.get("seq"),
                    attempt + 1,
                    reason,
                )
                self._count("failed")
                return
            delay = hook.backoff_s * (2**attempt) * (1 + random.random() * 0.25)
            with self.cond:
                self.cond.wait_for(lambda: self.closed, timeout=delay)


class WebhookDispatcher:
    """Delivers committed events to the configured webhooks in the background.

    Args:
        hooks: the endpoints (``RegistrySettings.webhooks``).
        env: where secrets are looked up (default ``os.environ``).
    """

    def __init__(self, hooks: list[RegistryWebhook], env: Mapping[str, str] | None = None) -> None:
        self.stats: dict[str, int] = {"attempts": 0, "delivered": 0, "failed": 0, "dropped": 0}
        self._lock = threading.Lock()
        self._endpoints = [
            _Endpoint(i, h, env if env is not None else os.environ, self.stats, self._lock)
            for i, h in enumerate(hooks)
        ]

    def publish(self, events: list[Event]) -> None:
        """Queue ``events`` for every endpoint that wants them; returns at once."""
        for ep in self._endpoints:
            for ev in events:
                if _wants(ep.hook, ev):
                    ep.put(ev.to_dict())

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until every queue is drained (tests, shutdown); returns whether it was."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(ep.idle() for ep in self._endpoints):
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        for ep in self._endpoints:
            ep.close()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stats)
