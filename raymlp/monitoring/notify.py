"""Delivering alert transitions: to the log, to the registry's event stream (a callable the
actor provides) and to webhooks (JSON POST, HMAC-signed, retried with backoff).

Deliveries run on one background thread behind a bounded queue, so a slow webhook never
delays evaluation; every delivery outcome is counted (``raymlp_alert_notifications_total``)::

    n = Notifier(webhooks=cfg.webhooks, registry_sink=None, on_outcome=count)
    n.notify(transition)      # returns at once
    n.close()
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from raymlp.config import AlertWebhook
from raymlp.monitoring.alerts import severity_at_least

__all__ = ["Notifier", "sign", "SIGNATURE_HEADER"]

logger = logging.getLogger("raymlp.monitor.alerts")

SIGNATURE_HEADER = "X-RayMLP-Signature"
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of the body under ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """Fan-out of alert transitions.

    Args:
        webhooks: endpoints (each filters by ``min_severity``).
        registry_sink: ``fn(transition)`` recording it in the registry event stream, or None.
        on_outcome: ``fn(channel, outcome)`` for metrics (outcome: ok | failed | dropped).
        queue_size: pending deliveries kept before new ones are dropped (and counted).
    """

    def __init__(
        self,
        webhooks: Iterable[AlertWebhook] = (),
        registry_sink: Callable[[dict[str, Any]], Any] | None = None,
        on_outcome: Callable[[str, str], Any] | None = None,
        queue_size: int = 10_000,
    ) -> None:
        self.webhooks = list(webhooks)
        self.registry_sink = registry_sink
        self._on_outcome = on_outcome or (lambda channel, outcome: None)
        self._q: queue.Queue[tuple[str, Any, dict[str, Any]] | None] = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name="raymlp-alert-delivery", daemon=True)
        self._thread.start()
        self.delivered: list[tuple[str, str, str]] = []  # (channel, alert id, transition)

    def notify(self, transition: dict[str, Any]) -> None:
        """Log now; queue the registry and webhook deliveries."""
        level = _LEVELS.get(transition.get("severity", "warning"), logging.WARNING)
        logger.log(level, "alert %s: %s", transition["transition"], transition.get("summary"))
        self._on_outcome("log", "ok")
        jobs: list[tuple[str, Any]] = []
        if self.registry_sink is not None:
            jobs.append(("registry", None))
        for hook in self.webhooks:
            if severity_at_least(transition.get("severity", "warning"), hook.min_severity):
                jobs.append(("webhook", hook))
        for channel, target in jobs:
            try:
                self._q.put_nowait((channel, target, transition))
            except queue.Full:
                self._on_outcome(channel, "dropped")

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            channel, target, t = item
            try:
                if channel == "registry":
                    self.registry_sink(t)  # type: ignore[misc]
                else:
                    self._post(target, t)
                self._on_outcome(channel, "ok")
                self.delivered.append((channel, t["id"], t["transition"]))
                del self.delivered[:-1000]
            except Exception as e:  # noqa: BLE001 - a failed delivery must not stop the next
                logger.warning("alert delivery to %s failed: %s", channel, e)
                self._on_outcome(channel, "failed")
            finally:
                self._q.task_done()

    def _post(self, hook: AlertWebhook, t: dict[str, Any]) -> None:
        body = json.dumps({"type": "raymlp.alert", **t}, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "raymlp-monitor"}
        if hook.secret_env:
            secret = os.environ.get(hook.secret_env)
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, body)
        delay = 0.5
        for attempt in range(hook.max_retries + 1):
            try:
                req = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=hook.timeout_s) as resp:  # noqa: S310
                    if resp.status < 300:
                        return
                    raise urllib.error.HTTPError(hook.url, resp.status, "not 2xx", None, None)
            except urllib.error.HTTPError as e:
                if e.code < 500 and e.code != 429:
                    raise  # a 4xx will not get better
                if attempt == hook.max_retries:
                    raise
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                if attempt == hook.max_retries:
                    raise
            time.sleep(delay * (1 + random.random() * 0.2))
            delay = min(delay * 2, 30.0)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until queued deliveries are done (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while self._q.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
