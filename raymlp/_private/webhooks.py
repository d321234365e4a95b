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

A delivery with an ``id`` is sent with :data:`DELIVERY_HEADER` (the id), the same on every
attempt and every re-send, so a receiver can de-duplicate. With an :class:`Outbox` (a durable
record under the storage root) deliveries survive a restart of the sending process: the caller
records a delivery with :meth:`Outbox.queue` before putting it, the sender records its outcome
(:meth:`Outbox.finish`, batched), and the next process re-queues what :meth:`Outbox.load` finds
without an outcome — at-least-once delivery, effectively once for a receiver that de-duplicates
by id::

    outbox = Outbox(storage, "registry", "webhook_outbox")
    sender = WebhookSender(hook, outbox=outbox)
    for p in outbox.load().pending:        # left by an earlier process
        sender.put(p.delivery)
    d = Delivery(body, headers, id="42-0")
    outbox.queue([(hook.url, d)])          # durable before it is attempted
    sender.put(d)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from raymlp.storage import Storage

__all__ = [
    "SIGNATURE_HEADER",
    "DELIVERY_HEADER",
    "sign",
    "verify_signature",
    "Delivery",
    "Outcome",
    "Outbox",
    "OutboxState",
    "PendingDelivery",
    "WebhookSender",
]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-RayMLP-Signature"
#: The delivery's stable id: the same on every attempt and re-send (receivers de-duplicate).
DELIVERY_HEADER = "X-RayMLP-Delivery"
#: HTTP statuses worth retrying (server errors, request timeout, rate limiting).
_RETRY_STATUSES = (408, 429)
_JITTER = 0.25
#: Outcomes recorded in one outbox segment at most (more are written as they come).
_OUTCOME_BATCH = 64


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
    """One POST: the body, the caller's headers, ``meta`` handed back in the outcome and the
    stable ``id`` sent as :data:`DELIVERY_HEADER` (required with an :class:`Outbox`; ``meta``
    must then be JSON-serialisable, it is stored with the delivery)."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    meta: Any = None
    id: str | None = None


@dataclass
class Outcome:
    """How a delivery ended: ``delivered``, ``failed`` (after ``attempts`` POSTs; 0 when it
    was never sent, e.g. its secret is missing) or ``dropped`` (queue overflow)."""

    status: Literal["delivered", "failed", "dropped"]
    delivery: Delivery
    attempts: int = 0
    reason: str | None = None


@dataclass
class PendingDelivery:
    """A delivery the outbox holds without an outcome, and the endpoint URL it is for."""

    target: str
    delivery: Delivery


@dataclass
class OutboxState:
    """What :meth:`Outbox.load` found: the pending deliveries (oldest first) and the marks."""

    pending: list[PendingDelivery]
    marks: dict[str, int]


_SEGMENT_SUFFIX = ".jsonl"


class Outbox:
    """The durable record of webhook deliveries: small JSON-lines segments under ``parts`` of
    the storage root, each written atomically (temp file + fsync + rename on a local root; one
    PUT on an object store), so it works wherever :class:`~raymlp.storage.Storage` does.

    A segment holds ``queued`` records (the whole delivery: target, id, body, headers, meta),
    ``done`` records (its outcome: delivered, failed after N attempts, dropped) and ``mark``
    records (a named high-water mark of the caller, e.g. the last registry event queued).
    Folded, a delivery is pending while it has a ``queued`` record and no ``done`` record.
    Every ``compact_every`` appends (and at :meth:`load` when more segments exist) the segments
    are replaced by one holding only the pending deliveries and the marks, so the outbox stays
    bounded by what is still undelivered. Thread-safe; two processes on one outbox (a stale
    twin) only ever re-send, never lose: compaction deletes only the segments it folded.

    Args:
        storage: the platform storage root.
        parts: the outbox directory under the root (``"registry", "webhook_outbox"``).
        compact_every: appends between compactions.
    """

    def __init__(self, storage: Storage, *parts: str, compact_every: int = 64) -> None:
        if compact_every < 1:
            raise ValueError(f"compact_every must be >= 1, got {compact_every!r}")
        self.storage = storage
        self.parts = tuple(parts)
        self.compact_every = compact_every
        self.segments_written = 0
        self.compactions = 0
        self._writer = os.urandom(4).hex()  # segment names of two processes never collide
        self._counter = itertools.count()
        self._appends = 0
        self._lock = threading.Lock()

    # -- writing --------------------------------------------------------------------------------

    def queue(
        self, items: Iterable[tuple[str, Delivery]], marks: Mapping[str, int] | None = None
    ) -> None:
        """Record ``(target url, delivery)`` pairs and ``marks`` durably, in one segment (call
        it before the deliveries are put into a sender). Raises StorageError."""
        now = time.time_ns()
        records: list[dict[str, Any]] = []
        for i, (target, d) in enumerate(items):
            if not d.id:
                raise ValueError("a delivery recorded in an outbox needs an id")
            records.append(
                {
                    "op": "queued",
                    "id": d.id,
                    "target": target,
                    "n": now + i,  # the queue order, for the re-queue after a restart
                    "body": base64.b64encode(d.body).decode("ascii"),
                    "headers": d.headers,
                    "meta": d.meta,
                }
            )
        for key, value in (marks or {}).items():
            records.append({"op": "mark", "key": key, "value": int(value)})
        self._append(records)

    def finish(self, outcomes: Iterable[Outcome]) -> None:
        """Record the outcomes of deliveries (ones without an id are skipped)."""
        self._append(
            [
                {
                    "op": "done",
                    "id": o.delivery.id,
                    "status": o.status,
                    "attempts": o.attempts,
                    "reason": o.reason,
                }
                for o in outcomes
                if o.delivery.id
            ]
        )

    def _append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with self._lock:
            self._write_segment(records)
            self._appends += 1
            due = self._appends >= self.compact_every
        if due:
            try:
                self.compact()
            except Exception as e:  # noqa: BLE001 - the records are durable; the next one retries
                logger.warning("webhook outbox %s: compaction failed: %s", "/".join(self.parts), e)

    def _write_segment(self, records: list[dict[str, Any]]) -> str:
        name = f"{time.time_ns():020d}-{self._writer}-{next(self._counter):08d}{_SEGMENT_SUFFIX}"
        data = "".join(json.dumps(r, default=str) + "\n" for r in records).encode()
        self.storage.write_bytes("/".join((*self.parts, name)), data)
        self.segments_written += 1
        return name

    # -- reading --------------------------------------------------------------------------------

    def _segments(self) -> list[str]:
        # temp files of a write in progress (or of a crashed one) never end in the suffix
        return [n for n in self.storage.listdir(*self.parts) if n.endswith(_SEGMENT_SUFFIX)]

    def _read(self, names: Sequence[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in names:
            try:
                raw = self.storage.read_bytes(*self.parts, name)
            except Exception as e:  # noqa: BLE001 - deleted by a concurrent compaction
                logger.debug("webhook outbox segment %s vanished: %s", name, e)
                continue
            for line in raw.decode("utf-8", "replace").splitlines():
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    logger.warning("webhook outbox segment %s: skipping a malformed line", name)
        return out

    @staticmethod
    def _fold(records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        queued: dict[str, dict[str, Any]] = {}
        done: set[str] = set()
        marks: dict[str, int] = {}
        for r in records:
            op = r.get("op")
            if op == "queued":
                queued.setdefault(str(r["id"]), r)
            elif op == "done":
                done.add(str(r["id"]))
            elif op == "mark":
                key = str(r["key"])
                marks[key] = max(int(r["value"]), marks.get(key, int(r["value"])))
        pending = sorted((r for i, r in queued.items() if i not in done), key=lambda r: r["n"])
        return pending, marks

    def load(self) -> OutboxState:
        """Fold every segment: the deliveries without an outcome (oldest first) and the marks.
        Compacts first when more than ``compact_every`` segments exist."""
        if len(self._segments()) > self.compact_every:
            try:
                self.compact()
            except Exception as e:  # noqa: BLE001 - reading works without it
                logger.warning("webhook outbox %s: compaction failed: %s", "/".join(self.parts), e)
        pending, marks = self._fold(self._read(self._segments()))
        return OutboxState(
            pending=[
                PendingDelivery(
                    target=str(r["target"]),
                    delivery=Delivery(
                        body=base64.b64decode(r["body"]),
                        headers=dict(r.get("headers") or {}),
                        meta=r.get("meta"),
                        id=str(r["id"]),
                    ),
                )
                for r in pending
            ],
            marks=marks,
        )

    def compact(self) -> int:
        """Replace the segments by one holding the pending deliveries and the marks (none when
        nothing is left); returns the number of segments removed."""
        with self._lock:
            self._appends = 0
            names = self._segments()
            if len(names) <= 1:
                return 0
            pending, marks = self._fold(self._read(names))
            keep = pending + [{"op": "mark", "key": k, "value": v} for k, v in marks.items()]
            if keep:
                self._write_segment(keep)  # first: a crash before the deletes only duplicates
            for name in names:
                self.storage.delete(*self.parts, name)
            self.compactions += 1
            return len(names)


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
        outbox: where outcomes are recorded (batched: at most ``_OUTCOME_BATCH`` at a time,
            and whenever the queue runs empty); the caller records each delivery there
            (:meth:`Outbox.queue`) before :meth:`put`. None: nothing is durable.
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
        outbox: Outbox | None = None,
    ) -> None:
        self.target = target
        self.outbox = outbox
        self._finished: list[Outcome] = []  # outcomes not yet recorded in the outbox
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
            self._report(Outcome("dropped", dropped, reason="queue full"))

    def _report(self, outcome: Outcome) -> None:
        if self.outbox is not None and outcome.delivery.id:
            with self._cond:
                self._finished.append(outcome)
        self._on_outcome(outcome)

    def _record_outcomes(self) -> None:
        """Write the buffered outcomes to the outbox (kept for the next try when it fails: a
        delivery whose outcome is lost is only re-sent after a restart, never lost)."""
        if self.outbox is None:
            return
        with self._cond:
            batch, self._finished = self._finished, []
        if not batch:
            return
        try:
            self.outbox.finish(batch)
        except Exception as e:  # noqa: BLE001 - storage down: retried with the next outcome
            logger.warning(
                "webhook %s: cannot record %d outcome(s): %s", self.target.url, len(batch), e
            )
            with self._cond:
                self._finished[:0] = batch
                del self._finished[: -self.queue_size]

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
                    break
                delivery = self._queue.popleft()
                self._busy = True
            try:
                outcome = self._deliver(delivery)
                if outcome is not None:
                    self._report(outcome)
            except Exception:  # noqa: BLE001, S110 - a broken callback must not stop the next
                pass
            finally:
                with self._cond:
                    flush = not self._queue or len(self._finished) >= _OUTCOME_BATCH
                if flush:  # still busy: wait_idle() returns once the outcomes are durable
                    self._record_outcomes()
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        self._record_outcomes()

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
        if delivery.id:
            headers[DELIVERY_HEADER] = delivery.id
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
