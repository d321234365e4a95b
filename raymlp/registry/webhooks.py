"""Webhook delivery of registry events: HMAC-signed, retried with backoff, never blocking.

:meth:`WebhookDispatcher.publish` only enqueues; one daemon thread per endpoint POSTs each event
(JSON) in order, retrying 5xx/408/429/timeouts with exponential backoff and jitter (the shared
sender, :mod:`raymlp._private.webhooks`). The body is signed with HMAC-SHA256 under the secret
read from the endpoint's ``secret_env`` variable::

    POST /hook
    Content-Type: application/json
    X-RayMLP-Event: alias_moved
    X-RayMLP-Delivery: 42-0
    X-RayMLP-Signature: sha256=5d1c...      # hmac(secret, body, sha256)

A receiver checks it with :func:`verify_signature`::

    if not verify_signature(secret, request.body, request.headers["X-RayMLP-Signature"]):
        abort(401)

Every endpoint is signed: the config refuses one without ``secret_env`` unless it says
``insecure: true`` (logged as a warning when the dispatcher starts), and a signed endpoint whose
secret is not set in the registry's process is never delivered unsigned.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from raymlp._private.webhooks import (
    SIGNATURE_HEADER,
    Delivery,
    Outcome,
    WebhookSender,
    sign,
    verify_signature,
)
from raymlp.config import RegistryWebhook
from raymlp.registry.events import Event

__all__ = ["sign", "verify_signature", "WebhookDispatcher", "SIGNATURE_HEADER"]

logger = logging.getLogger(__name__)

_MAX_QUEUE = 10_000


def _wants(hook: RegistryWebhook, event: Event) -> bool:
    if "*" not in hook.events and event.kind not in hook.events:
        return False
    return not hook.models or (event.model is not None and event.model in hook.models)


class WebhookDispatcher:
    """Delivers committed events to the configured webhooks in the background.

    Args:
        hooks: the endpoints (``RegistrySettings.webhooks``).
        env: where secrets are looked up (default ``os.environ``). A hook whose secret is not
            set there is never delivered unsigned (its deliveries fail).
    """

    def __init__(self, hooks: list[RegistryWebhook], env: Mapping[str, str] | None = None) -> None:
        self.stats: dict[str, int] = {"attempts": 0, "delivered": 0, "failed": 0, "dropped": 0}
        self._lock = threading.Lock()
        env = env if env is not None else os.environ
        self._hooks = list(hooks)
        for h in self._hooks:
            if h.insecure:
                logger.warning("registry webhook %s is insecure: its deliveries are unsigned", h.url)
        self._senders = [
            WebhookSender(
                h,
                on_outcome=self._outcome,
                env=env,
                require_secret=True,
                queue_size=_MAX_QUEUE,
                overflow="oldest",
                name=f"raymlp-webhook-{i}",
            )
            for i, h in enumerate(self._hooks)
        ]

    def _outcome(self, o: Outcome) -> None:
        url, seq = o.delivery.meta
        with self._lock:
            self.stats["attempts"] += o.attempts
            self.stats[o.status] += 1
        if o.status == "dropped":
            logger.warning("webhook %s: queue full, dropped event seq %s", url, seq)
        elif o.status == "failed" and o.attempts == 0:
            logger.error(
                "webhook %s: %s in the registry process; not delivering unsigned", url, o.reason
            )
        elif o.status == "failed":
            logger.warning(
                "webhook %s: giving up on event seq %s after %d attempt(s): %s",
                url,
                seq,
                o.attempts,
                o.reason,
            )

    @staticmethod
    def _delivery(index: int, hook: RegistryWebhook, event: dict[str, Any]) -> Delivery:
        return Delivery(
            body=json.dumps(event, sort_keys=True, default=str).encode(),
            headers={
                "Content-Type": "application/json",
                "User-Agent": "raymlp-registry",
                "X-RayMLP-Event": str(event.get("kind")),
                "X-RayMLP-Delivery": f"{event.get('seq')}-{index}",
            },
            meta=(hook.url, event.get("seq")),
        )

    def publish(self, events: list[Event]) -> None:
        """Queue ``events`` for every endpoint that wants them; returns at once."""
        for i, (hook, sender) in enumerate(zip(self._hooks, self._senders)):
            for ev in events:
                if _wants(hook, ev):
                    sender.put(self._delivery(i, hook, ev.to_dict()))

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until every queue is drained (tests, shutdown); returns whether it was."""
        deadline = time.monotonic() + timeout_s
        return all(s.wait_idle(max(0.0, deadline - time.monotonic())) for s in self._senders)

    def close(self) -> None:
        for s in self._senders:
            s.close()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stats)
