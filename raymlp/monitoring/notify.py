"""Delivering alert transitions: to the log, to the registry's event stream (a callable the
actor provides) and to webhooks (JSON POST, HMAC-signed, retried with backoff). A webhook is
always signed unless its config says ``insecure: true``; one whose secret variable is not set in
the monitor's process is never sent unsigned (the delivery fails, is logged and counted).

Deliveries run in the background behind bounded queues — one thread for the registry sink, one
per webhook (the shared sender, :mod:`raymlp._private.webhooks`) — so a slow webhook never
delays evaluation; every delivery outcome is counted (``raymlp_alert_notifications_total``)::

    n = Notifier(webhooks=cfg.webhooks, registry_sink=None, on_outcome=count)
    n.notify(transition)      # returns at once
    n.close()

With an :class:`~raymlp._private.webhooks.Outbox` (the monitor actor's, under
``<root>/monitoring/webhook_outbox/``) webhook deliveries survive a restart: :meth:`Notifier.notify`
records them there before they are queued, their outcomes are recorded as they come, and a
notifier made with ``recover=True`` re-queues what an earlier process left without an outcome.
Each webhook delivery carries a stable ``X-RayMLP-Delivery`` id (``alert-<hash of the transition
and the endpoint>``), the same on every re-send, for the receiver to de-duplicate. When the
outbox cannot be written the alert is still sent (not durable; logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from raymlp._private.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    Outbox,
    Outcome,
    WebhookSender,
    sign,
)
from raymlp.config import AlertWebhook
from raymlp.monitoring.alerts import severity_at_least

__all__ = ["Notifier", "sign", "SIGNATURE_HEADER", "DELIVERY_HEADER", "delivery_id"]

logger = logging.getLogger("raymlp.monitor.alerts")

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
_MAX_DELAY_S = 30.0
_OUTCOMES = {"delivered": "ok", "failed": "failed", "dropped": "dropped"}


def delivery_id(transition: dict[str, Any], url: str) -> str:
    """The stable id of one transition's delivery to one endpoint (the same whenever the same
    transition is sent there again)."""
    key = json.dumps([transition, url], sort_keys=True, default=str).encode()
    return "alert-" + hashlib.sha256(key).hexdigest()[:32]


class Notifier:
    """Fan-out of alert transitions.

    Args:
        webhooks: endpoints (each filters by ``min_severity``). A hook whose secret env is
            not set is not delivered (never unsigned); ``insecure: true`` hooks go unsigned.
        registry_sink: ``fn(transition)`` recording it in the registry event stream, or None.
        on_outcome: ``fn(channel, outcome)`` for metrics (outcome: ok | failed | dropped).
        queue_size: pending deliveries kept (per channel) before new ones are dropped (and
            counted).
        outbox: where webhook deliveries and their outcomes are recorded (durable), or None.
        recover: re-queue the deliveries ``outbox`` holds without an outcome (once per process:
            a notifier that replaces another on the same outbox must not re-send what the
            other is still delivering); those to an endpoint no longer configured are dropped.
    """

    def __init__(
        self,
        webhooks: Iterable[AlertWebhook] = (),
        registry_sink: Callable[[dict[str, Any]], Any] | None = None,
        on_outcome: Callable[[str, str], Any] | None = None,
        queue_size: int = 10_000,
        outbox: Outbox | None = None,
        recover: bool = False,
    ) -> None:
        self.webhooks = list(webhooks)
        self.outbox = outbox
        self.requeued = 0
        self.registry_sink = registry_sink
        self._on_outcome = on_outcome or (lambda channel, outcome: None)
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name="raymlp-alert-delivery", daemon=True)
        self._thread.start()
        self._senders = [
            WebhookSender(
                hook,
                on_outcome=self._webhook_outcome,
                require_secret=True,
                queue_size=queue_size,
                overflow="newest",
                max_delay_s=_MAX_DELAY_S,
                name=f"raymlp-alert-webhook-{i}",
                outbox=outbox,
            )
            for i, hook in enumerate(self.webhooks)
        ]
        for hook in self.webhooks:
            if getattr(hook, "insecure", False):
                logger.warning("alert webhook %s is insecure: its deliveries are unsigned", hook.url)
        self.delivered: list[tuple[str, str, str]] = []  # (channel, alert id, transition)
        self._delivered_lock = threading.Lock()  # appended from every delivery thread
        if outbox is not None and recover:
            self._recover(outbox)

    def _recover(self, outbox: Outbox) -> None:
        try:
            state = outbox.load()
        except Exception as e:  # noqa: BLE001 - alerting works without the old deliveries
            logger.error("alert webhook outbox unreadable (nothing re-sent): %s", e)
            return
        by_url: dict[str, WebhookSender] = {}
        for hook, s in zip(self.webhooks, self._senders):
            by_url.setdefault(hook.url, s)
        gone: list[Outcome] = []
        for p in state.pending:
            sender = by_url.get(p.target)
            if sender is None:
                gone.append(Outcome("dropped", p.delivery, reason="endpoint no longer configured"))
            else:
                sender.put(p.delivery)
                self.requeued += 1
        if gone:
            logger.warning("alert webhook outbox: dropped %d delivery(ies) to gone endpoints", len(gone))
            try:
                outbox.finish(gone)
            except Exception as e:  # noqa: BLE001 - they are dropped again by the next start
                logger.warning("alert webhook outbox: cannot record drops: %s", e)
        if self.requeued:
            logger.info("alert webhook outbox: re-queued %d delivery(ies)", self.requeued)

    def notify(self, transition: dict[str, Any]) -> None:
        """Log now; queue the registry and webhook deliveries."""
        level = _LEVELS.get(transition.get("severity", "warning"), logging.WARNING)
        logger.log(level, "alert %s: %s", transition["transition"], transition.get("summary"))
        self._on_outcome("log", "ok")
        if self.registry_sink is not None:
            try:
                self._q.put_nowait(transition)
            except queue.Full:
                self._on_outcome("registry", "dropped")
        body: bytes | None = None
        items: list[tuple[WebhookSender, Delivery]] = []
        for hook, sender in zip(self.webhooks, self._senders):
            if severity_at_least(transition.get("severity", "warning"), hook.min_severity):
                if body is None:
                    body = json.dumps({"type": "raymlp.alert", **transition}, default=str).encode()
                headers = {"Content-Type": "application/json", "User-Agent": "raymlp-monitor"}
                d = Delivery(
                    body=body, headers=headers, meta=transition, id=delivery_id(transition, hook.url)
                )
                items.append((sender, d))
        if items and self.outbox is not None:
            try:  # durable before the first attempt
                self.outbox.queue([(s.target.url, d) for s, d in items])
            except Exception as e:  # noqa: BLE001 - an alert still goes out, only not durably
                logger.error("alert webhook outbox unwritable (sending without it): %s", e)
        for sender, d in items:
            sender.put(d)

    def _delivered(self, channel: str, t: dict[str, Any]) -> None:
        with self._delivered_lock:
            self.delivered.append((channel, t["id"], t["transition"]))
            del self.delivered[:-1000]

    def _webhook_outcome(self, o: Outcome) -> None:
        if o.status == "delivered":
            self._delivered("webhook", o.delivery.meta)
        elif o.status == "failed":
            logger.warning("alert delivery to webhook failed: %s", o.reason)
        self._on_outcome("webhook", _OUTCOMES[o.status])

    def _run(self) -> None:
        while True:
            t = self._q.get()
            if t is None:
                return
            try:
                self.registry_sink(t)  # type: ignore[misc]
                self._on_outcome("registry", "ok")
                self._delivered("registry", t)
            except Exception as e:  # noqa: BLE001 - a failed delivery must not stop the next
                logger.warning("alert delivery to registry failed: %s", e)
                self._on_outcome("registry", "failed")
            finally:
                self._q.task_done()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until queued deliveries are done (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while self._q.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return all(s.wait_idle(max(0.0, deadline - time.monotonic())) for s in self._senders)

    def close(self) -> None:
        """Stop after delivering what is queued (the threads are daemons: never blocks)."""
        for s in self._senders:
            s.close(drain=True)
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
