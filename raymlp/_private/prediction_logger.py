"""The prediction log's client side: a bounded, non-blocking buffer of prediction and feedback
records with a background flusher to the monitor actor.

What the Serve gateway embeds (through the replica-side services of
``raymlp.serving._platform``) and what ``p.monitor.logger()`` returns: ``log(record)`` appends to
a bounded in-process buffer and returns at once (never blocks the request path, never raises on
the request path); a background thread ships batches to the monitor. When the buffer is full the
record is dropped and *counted* (``stats()["dropped"]``, reported to the monitor with the next
batch as ``raymlp_prediction_log_dropped_total{source}``, and as a ``ray.util.metrics`` counter
in the caller's process). A drop report keeps its id (``drop_id``) and count until the monitor
acknowledges it, so one re-sent after a timeout is counted there once; what is dropped
meanwhile waits for the next report.

With ``spool`` (a :class:`~raymlp._private.log_spool.LogSpool`; the gateway's default), every
queued record is also written to a node-local spool before ``log`` returns, and deleted from it
once shipped: when the process is killed, another logger on the node (a surviving or the
replacement replica) claims and ships what it had not (the monitor de-duplicates by request
id), so an answered request's record is not lost with its replica.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from raymlp._private.credentials import Caller
from raymlp._private.log_spool import LogSpool
from raymlp._private.rpc import call
from raymlp.errors import RayMLPError, UnavailableError, ValidationError
from raymlp.monitoring.records import normalize_feedback, normalize_prediction

__all__ = ["PredictionLogger", "Sender"]

logger = logging.getLogger(__name__)

#: ``fn(kind, records, dropped)``: how a batch is shipped (``kind``: predictions | feedback).
Sender = Callable[[str, list[dict[str, Any]], int], Any]


class PredictionLogger:
    """A bounded, non-blocking buffer of prediction and feedback records with a background
    flusher (what the gateway embeds).

    Args:
        target: an ``ActorClient`` on the monitor (or anything with ``.remote(method, ...)``);
            ignored when ``send`` is given.
        credential: who ships the records: a :class:`Caller` or ``() -> credential dict``,
            asked afresh for every shipment (service tokens expire and are renewed); the
            monitor verifies it. Needed with ``target`` unless auth is off.
        source: the name reported with the records (``gateway``...).
        capacity: records buffered (predictions + feedback); beyond it new ones are dropped
            and counted.
        batch_size: records per call to the monitor.
        flush_interval_s: longest a record waits before it is shipped.
        send: ``fn(kind, records, dropped)`` instead of calling the actor (tests, adapters);
            ``kind`` is ``predictions`` or ``feedback``.
        call_timeout_s: how long one shipment may take before it is retried.
        spool: a node-local write-ahead spool (see the module docstring); None: memory only.
        spool_scan_s: how often the spool is searched for what dead loggers left.
    """

    def __init__(
        self,
        target: Any = None,
        *,
        credential: Caller | Callable[[], dict[str, Any]] | None = None,
        source: str = "sdk",
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        send: Sender | None = None,
        call_timeout_s: float = 30.0,
        start: bool = True,
        spool: LogSpool | None = None,
        spool_scan_s: float = 2.0,
    ) -> None:
        if capacity < 1 or batch_size < 1 or flush_interval_s <= 0:
            raise ValidationError(
                "capacity and batch_size must be >= 1, flush_interval_s > 0",
                field="capacity",
                rule=">= 1",
            )
        self.source = source
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.call_timeout_s = call_timeout_s
        self._target = target
        self._credential: Callable[[], dict[str, Any]] = (
            credential.wire
            if isinstance(credential, Caller)
            else credential
            if credential is not None
            else dict  # no credential: the monitor treats it as auth-off local admin or refuses
        )
        self._send = send or self._send_to_actor
        # (seq, record): seq orders records across both kinds, for the spool's watermark
        self._buf: dict[str, deque[tuple[int, dict[str, Any]]]] = {
            "predictions": deque(),
            "feedback": deque(),
        }
        self._cond = threading.Condition()
        self._seq = 0
        self._spool = spool
        self.spool_scan_s = spool_scan_s
        self._next_scan = 0.0
        self._inflight = 0
        self._inflight_first: int | None = None
        self._stopping = False
        self._counts = {
            "logged": 0,
            "sent": 0,
            "dropped": 0,
            "rejected": 0,
            "failed_batches": 0,
            "recovered": 0,
        }
        self._unreported_dropped = 0
        # The drop report in flight (or to re-send): (drop_id, count), cleared once answered.
        self._drop_report: tuple[str, int] | None = None
        self._drop_reports = 0
        self._id = uuid.uuid4().hex[:16]
        self.last_error: str | None = None
        self._ray_dropped = self._ray_counter()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    @staticmethod
    def _ray_counter() -> Any:
        try:
            import ray
            from ray.util.metrics import Counter

            if not ray.is_initialized():
                return None
            return Counter(
                "raymlp_prediction_log_dropped",  # Ray adds "_total"
                description="Prediction-log records dropped on a full buffer",
                tag_keys=("source",),
            )
        except Exception:  # noqa: BLE001 - metrics are best effort outside a Ray worker
            return None

    # -- request path --------------------------------------------------------------------------

    def _put(self, kind: str, rec: dict[str, Any]) -> bool:
        with self._cond:
            return self._put_locked(kind, rec)

    def _put_locked(self, kind: str, rec: dict[str, Any]) -> bool:
        """Queue one record; the caller holds ``self._cond``."""
        if self._stopping:
            self._drop(1)
            return False
        if self._queued() >= self.capacity:
            self._drop(1)
            return False
        self._seq += 1
        if self._spool is not None:
            try:
                self._spool.append(self._seq, kind, rec)
            except OSError as e:  # a full or gone disk: keep serving, memory only
                logger.error("prediction-log spool disabled: %s", e)
                self._stop_spool(keep=True)
        self._buf[kind].append((self._seq, rec))
        self._counts["logged"] += 1
        if len(self._buf[kind]) >= self.batch_size:
            self._cond.notify()
        return True

    def _queued(self) -> int:
        """Records in the buffer, both kinds (the caller holds ``self._cond``)."""
        return len(self._buf["predictions"]) + len(self._buf["feedback"])

    def _stop_spool(self, *, keep: bool) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            try:
                spool.close(keep=keep)
            except OSError:
                logger.exception("prediction-log spool did not close cleanly")

    def _watermark(self) -> int:
        """The highest seq below which every record was shipped or counted as dropped."""
        firsts = [b[0][0] for b in self._buf.values() if b]
        if self._inflight_first is not None:
            firsts.append(self._inflight_first)
        return min(firsts) - 1 if firsts else self._seq

    def _release_spool(self) -> None:
        if self._spool is not None:
            try:
                self._spool.release(self._watermark())
            except OSError as e:
                logger.error("prediction-log spool disabled: %s", e)
                self._stop_spool(keep=True)

    def _claim_orphans(self) -> None:
        """Queue what dead loggers on this node left in the spool (flusher thread). Their
        files are read outside the lock (``log()`` on the request path never waits on that
        disk I/O) and deleted only once every record is re-queued — and so in our own spool;
        an owner whose records do not fit now (buffer full, stopping) stays for a later scan."""
        spool = self._spool
        if spool is None or self._stopping:
            return
        try:
            for orphan in spool.claim_orphans():
                if not self._requeue(orphan.records):
                    return  # its files stay: claimed again later (the de-dup absorbs repeats)
                orphan.done()
        except OSError as e:
            logger.warning("prediction-log spool: could not claim orphans: %s", e)

    def _requeue(self, records: list[tuple[str, dict[str, Any]]], chunk: int = 200) -> bool:
        """Queue claimed records, ``chunk`` at a time under the lock; False (and nothing more
        queued) once they no longer fit."""
        for i in range(0, len(records), chunk):
            part = records[i : i + chunk]
            with self._cond:
                if self._stopping or self.capacity - self._queued() < len(part):
                    return False
                for kind, rec in part:
                    if self._put_locked(kind, rec):
                        self._counts["recovered"] += 1
        return True

    def _drop(self, n: int) -> None:
        self._counts["dropped"] += n
        self._unreported_dropped += n
        if self._ray_dropped is not None:
            try:
                self._ray_dropped.inc(n, tags={"source": self.source})
            except Exception:  # noqa: BLE001
                self._ray_dropped = None

    def log(self, record: dict[str, Any]) -> bool:
        """Queue one prediction record; False if it was rejected (invalid) or dropped (full).
        Never blocks on the monitor and never raises."""
        try:
            rec = normalize_prediction(record)
        except RayMLPError as e:
            with self._cond:
                self._counts["rejected"] += 1
            logger.warning("prediction record rejected: %s", e)
            return False
        return self._put("predictions", rec)

    def feedback(self, record: dict[str, Any]) -> bool:
        """Queue one feedback record ``{"request_id", "label"}`` (same guarantees as log)."""
        try:
            rec = normalize_feedback(record)
        except RayMLPError as e:
            with self._cond:
                self._counts["rejected"] += 1
            logger.warning("feedback record rejected: %s", e)
            return False
        return self._put("feedback", rec)

    # -- shipping ----------------------------------------------------------------------------------

    def _send_to_actor(self, kind: str, records: list[dict[str, Any]], dropped: int) -> None:
        import ray

        name = getattr(self._target, "name", "monitor")
        cred = self._credential()
        if kind == "predictions":
            drop_id = self._drop_report[0] if dropped and self._drop_report else None
            ref = self._target.remote(
                "log_predictions", cred, records, self.source, dropped, drop_id
            )
        else:
            ref = self._target.remote("log_feedback", cred, records)
        try:
            call(ref, timeout=self.call_timeout_s, actor=name)
        except UnavailableError:
            self._target._handle = None  # re-resolve after a restart
            raise
        except ray.exceptions.RayError as e:
            raise UnavailableError(f"monitor call failed: {e}", actor=name) from e

    def _drops_to_report(self) -> int:
        """The count the next predictions shipment reports: the pending report (a retry
        re-sends it unchanged, same ``drop_id``), else a new one of what was dropped since."""
        if self._drop_report is None and self._unreported_dropped:
            self._drop_reports += 1
            self._drop_report = (f"{self._id}-{self._drop_reports}", self._unreported_dropped)
            self._unreported_dropped = 0
        return self._drop_report[1] if self._drop_report is not None else 0

    def _take(self) -> tuple[str, list[tuple[int, dict[str, Any]]], int] | None:
        for kind in ("predictions", "feedback"):  # predictions first: labels join onto them
            buf = self._buf[kind]
            if buf:
                batch = [buf.popleft() for _ in range(min(self.batch_size, len(buf)))]
                dropped = self._drops_to_report() if kind == "predictions" else 0
                self._inflight_first = batch[0][0]
                return kind, batch, dropped
        if self._drop_report is not None or self._unreported_dropped:
            return "predictions", [], self._drops_to_report()
        return None

    def _pending(self) -> bool:
        """Anything left to ship: records, or a drop count not yet acknowledged."""
        return bool(
            self._buf["predictions"]
            or self._buf["feedback"]
            or self._unreported_dropped
            or self._drop_report is not None
        )

    def _run(self) -> None:
        backoff = 0.05
        while True:
            if self._spool is not None and time.monotonic() >= self._next_scan:
                self._next_scan = time.monotonic() + self.spool_scan_s
                self._claim_orphans()
            with self._cond:
                if not self._pending():
                    if self._stopping:
                        return
                    self._cond.wait(self._wait_s())
                item = self._take()
                if item is None:
                    continue
                self._inflight += 1
            kind, seqd, dropped = item
            batch = [rec for _, rec in seqd]
            try:
                self._send(kind, batch, dropped)
                ok = True
            except ValidationError as e:
                # a bug upstream (records were validated here): drop, count, keep going
                ok = True
                logger.error("monitor rejected a %s batch of %d: %s", kind, len(batch), e)
                with self._cond:
                    self._counts["rejected"] += len(batch)
            except Exception as e:  # noqa: BLE001 - the monitor is down or slow: retry
                ok = False
                self.last_error = str(e)
            with self._cond:
                self._inflight -= 1
                self._inflight_first = None
                if ok:
                    self._counts["sent"] += len(batch)
                    if dropped:
                        self._drop_report = None  # acknowledged: counted by the monitor
                    backoff = 0.05
                else:
                    # the batch and its drop report (same id) are re-sent: the monitor may
                    # have counted them already (a timeout), and counts a drop_id only once
                    self._counts["failed_batches"] += 1
                    room = self.capacity - self._queued()
                    keep = seqd[: max(room, 0)]
                    self._buf[kind].extendleft(reversed(keep))
                    if len(keep) < len(seqd):
                        self._drop(len(seqd) - len(keep))
                self._release_spool()
                self._cond.notify_all()
                if not ok:
                    if self._stopping:
                        return
                    self._cond.wait(backoff)
                    backoff = min(backoff * 2, 5.0)

    def _wait_s(self) -> float:
        if self._spool is None:
            return self.flush_interval_s
        return max(0.01, min(self.flush_interval_s, self._next_scan - time.monotonic()))

    def start(self) -> PredictionLogger:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="raymlp-prediction-logger", daemon=True
            )
            self._thread.start()
        return self

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far was shipped; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._cond.notify_all()
            while self._pending() or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float = 10.0) -> bool:
        """Ship what is queued (up to ``timeout_s``), then stop the thread."""
        ok = self.flush(timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(timeout_s, 0.1))
        with self._cond:
            # not all shipped: leave the rest in the spool for another logger to claim
            self._stop_spool(keep=not ok or self._pending())
        return ok

    def stats(self) -> dict[str, Any]:
        """``logged``, ``sent``, ``dropped``, ``rejected``, ``failed_batches``, ``queued``."""
        with self._cond:
            return {
                **self._counts,
                "queued": self._queued(),
                "spooled": self._spool is not None,
                "last_error": self.last_error,
            }
