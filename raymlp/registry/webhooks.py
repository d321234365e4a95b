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

Durable (:meth:`WebhookDispatcher.open_outbox`, done by the registry actor): deliveries go
through an outbox under ``<root>/registry/webhook_outbox/``
(:class:`raymlp._private.webhooks.Outbox`). A recorder thread writes each batch of published
events' deliveries there, with the seq of the last event handled as a mark, before any of them
is attempted; outcomes are recorded as they come. A restarted registry re-queues every delivery
without an outcome and publishes the events committed after the mark (committed, but killed
before the outbox had them), so every committed event reaches every endpoint that wants it at
least once; ``X-RayMLP-Delivery`` stays the same
on every re-send for the receiver to de-duplicate.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from raymlp._private.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    Outbox,
    Outcome,
    WebhookSender,
    sign,
    verify_signature,
)
from raymlp.config import RegistryWebhook
from raymlp.registry.events import Event
from raymlp.storage import Storage

__all__ = ["sign", "verify_signature", "WebhookDispatcher", "SIGNATURE_HEADER", "DELIVERY_HEADER"]

logger = logging.getLogger(__name__)

_MAX_QUEUE = 10_000
#: Retry delays of an outbox write that failed (the storage root is unreachable).
_RECORD_BACKOFF_S = (0.1, 5.0)


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
        #: what open_outbox found: deliveries re-queued, events published after the mark
        self.recovered: dict[str, int] = {"requeued": 0, "caught_up": 0}
        self._lock = threading.Lock()
        self.outbox: Outbox | None = None
        self._inbox: list[Event] = []  # published, not yet in the outbox (durable mode)
        self._recording = False
        self._closed = False
        self._cond = threading.Condition()
        self._recorder: threading.Thread | None = None
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
            },
            meta=[hook.url, event.get("seq")],
            # <seq>-<hook>: the same for every re-send of this event to this endpoint
            id=f"{event.get('seq')}-{index}",
        )

    def _deliveries(self, events: list[Event]) -> list[tuple[WebhookSender, Delivery]]:
        out = []
        for i, (hook, sender) in enumerate(zip(self._hooks, self._senders)):
            for ev in events:
                if _wants(hook, ev):
                    out.append((sender, self._delivery(i, hook, ev.to_dict())))
        return out

    def publish(self, events: list[Event]) -> None:
        """Queue ``events`` for every endpoint that wants them; returns at once (durable: the
        recorder thread writes them to the outbox, then queues them)."""
        if not events:
            return
        if self.outbox is None:
            for sender, d in self._deliveries(events):
                sender.put(d)
            return
        with self._cond:
            self._inbox.extend(events)
            if len(self._inbox) > _MAX_QUEUE:  # the storage root is down for long
                lost = len(self._inbox) - _MAX_QUEUE
                del self._inbox[:lost]
                with self._lock:
                    self.stats["dropped"] += lost
                logger.error("webhook outbox unwritable: dropped %d unrecorded event(s)", lost)
            self._cond.notify_all()

    def open_outbox(
        self,
        storage: Storage,
        last_seq: int,
        read_after: Callable[[int], list[Event]],
        *,
        compact_every: int = 64,
    ) -> dict[str, int]:
        """Make deliveries durable (the registry actor, once its log is replayed): re-queue the
        deliveries an earlier process left without an outcome, and publish the events after
        the outbox's mark (``read_after(mark)``, up to ``last_seq``). A first start (no mark)
        sends no history: it marks ``last_seq``. No endpoints: nothing is written.

        Returns ``{"requeued": n, "caught_up": n}``."""
        if not self._hooks or self.outbox is not None:
            return {"requeued": 0, "caught_up": 0}
        outbox = Outbox(storage, "registry", "webhook_outbox", compact_every=compact_every)
        state = outbox.load()
        by_url: dict[str, WebhookSender] = {}
        for hook, s in zip(self._hooks, self._senders):
            s.outbox = outbox
            by_url.setdefault(hook.url, s)
        gone: list[Outcome] = []
        for p in state.pending:
            sender = by_url.get(p.target)
            if sender is None:
                gone.append(Outcome("dropped", p.delivery, reason="endpoint no longer configured"))
            else:
                sender.put(p.delivery)
        if gone:
            logger.warning("webhook outbox: dropped %d delivery(ies) to gone endpoints", len(gone))
            outbox.finish(gone)
        mark = state.marks.get("seq")
        caught_up: list[Event] = []
        if mark is None:
            outbox.queue([], marks={"seq": last_seq})
        elif mark < last_seq:
            caught_up = [e for e in read_after(mark) if e.seq is not None and e.seq <= last_seq]
        self.recovered = {"requeued": len(state.pending) - len(gone), "caught_up": len(caught_up)}
        self.outbox = outbox
        self._recorder = threading.Thread(
            target=self._record_loop, name="raymlp-webhook-outbox", daemon=True
        )
        self._recorder.start()
        self.publish(caught_up)
        if state.pending or caught_up:
            logger.info(
                "webhook outbox: re-queued %d delivery(ies), caught up %d event(s) after seq %s",
                len(state.pending) - len(gone),
                len(caught_up),
                mark,
            )
        return dict(self.recovered)

    def _record_loop(self) -> None:
        """Outbox first, then the senders: no delivery is attempted before it is durable."""
        assert self.outbox is not None
        delay = _RECORD_BACKOFF_S[0]
        while True:
            with self._cond:
                while not self._inbox and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch, self._inbox = self._inbox, []
                self._recording = True
            try:
                items = self._deliveries(batch)
                seqs = [e.seq for e in batch if e.seq is not None]
                try:
                    self.outbox.queue(
                        [(s.target.url, d) for s, d in items],
                        marks={"seq": max(seqs)} if seqs else None,
                    )
                except Exception as e:  # noqa: BLE001 - the storage root is down: retry
                    logger.warning("webhook outbox: cannot record %d event(s): %s", len(batch), e)
                    with self._cond:
                        self._inbox[:0] = batch
                        self._cond.wait_for(lambda: self._closed, timeout=delay)
                    delay = min(delay * 2, _RECORD_BACKOFF_S[1])
                    continue
                delay = _RECORD_BACKOFF_S[0]
                for sender, d in items:
                    sender.put(d)
            finally:
                with self._cond:
                    self._recording = False
                    self._cond.notify_all()

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until every queue is drained (tests, shutdown); returns whether it was."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if not self._cond.wait_for(
                lambda: not self._inbox and not self._recording, max(0.0, timeout_s)
            ):
                return False
        return all(s.wait_idle(max(0.0, deadline - time.monotonic())) for s in self._senders)

    def close(self) -> None:
        """Stop at once; with an outbox, what is not delivered yet is re-sent by the next
        process on this storage root."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for s in self._senders:
            s.close()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stats)
