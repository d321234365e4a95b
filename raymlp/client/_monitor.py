"""``p.monitor``: the prediction log, reports, alerts and metrics of the monitor actor.

Two ways in for prediction records:

* :meth:`MonitorClient.log_predictions` / :meth:`MonitorClient.log_feedback` — one blocking
  call per batch (durable on return). For jobs, tests and backfills.
* :class:`PredictionLogger` — what the Serve gateway embeds: ``log(record)`` appends to a
  bounded in-process buffer and returns at once (never blocks the request path, never raises
  on the request path); a background thread ships batches to the monitor. When the buffer is
  full the record is dropped and *counted* (``logger.stats()["dropped"]``, reported to the
  monitor with the next batch as ``raymlp_prediction_log_dropped_total{source}``, and as a
  ``ray.util.metrics`` counter in the caller's process)::

    p = raymlp.connect()
    log = p.monitor.logger(source="gateway")
    log.log({"request_id": rid, "model": "customer-churn", "version": 3, "route": "primary",
             "features": feats, "prediction": "high_risk", "probability": 0.71,
             "latency_ms": 4.2})
    log.feedback({"request_id": rid, "label": 1})
    p.monitor.report("customer-churn", start="1h", html_path="report.html")
    p.monitor.alerts(state="firing")
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from raymlp.config import MonitoringConfig, load_config, load_monitoring_config, parse_duration
from raymlp.errors import RayMLPError, UnavailableError, ValidationError
from raymlp.monitoring.html import render_html
from raymlp.monitoring.records import normalize_feedback, normalize_prediction
from raymlp.monitoring.report import render_text

__all__ = ["MonitorClient", "PredictionLogger", "parse_time"]

logger = logging.getLogger(__name__)

Sender = Callable[[str, list[dict[str, Any]], int], Any]


def parse_time(value: Any, now: float | None = None) -> float | None:
    """A report bound: None, epoch seconds, a datetime, an ISO-8601 string, or a duration
    (``"1h"``, ``"30m"``: that long before now)."""
    now = time.time() if now is None else now
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return now - parse_duration(value).total_seconds()
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise ValidationError(
        f"time {value!r} is not understood (rule: epoch seconds, ISO-8601, or a duration like "
        "'1h' meaning that long ago)",
        field="time",
        value=value,
    )


class MonitorClient:
    """The monitor namespace of a :class:`~raymlp.client.Platform` (``p.monitor``)."""

    def __init__(self, platform: Any) -> None:
        self._p = platform
        self._actor = platform.actor("monitor")

    @property
    def _principal(self) -> dict[str, Any]:
        return self._p.principal.model_dump(mode="json")

    # -- ingest --------------------------------------------------------------------------------

    def log_predictions(
        self, records: list[dict[str, Any]], *, source: str = "sdk", dropped: int = 0
    ) -> dict[str, Any]:
        """Append prediction records (all or nothing; durable on return)."""
        return self._actor.call("log_predictions", records, source, dropped)

    def log_feedback(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Append labels ``{"request_id", "label", "ts"?}``; joined to predictions by id."""
        return self._actor.call("log_feedback", records)

    def logger(
        self,
        *,
        source: str = "sdk",
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
    ) -> PredictionLogger:
        """A started :class:`PredictionLogger` that ships to this platform's monitor."""
        return PredictionLogger(
            self._actor,
            source=source,
            capacity=capacity,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
        )

    # -- reports and alerts ---------------------------------------------------------------------

    def report(
        self, model: str, start: Any = None, end: Any = None, html_path: str | Path | None = None
    ) -> dict[str, Any]:
        """The monitoring report of ``model`` over [start, end) (default: the last hour).

        ``start``/``end``: epoch seconds, datetime, ISO-8601 or a duration ago (``"6h"``).
        ``html_path``: also write the HTML report (inline SVG plots) there.
        """
        now = time.time()
        rep = self._actor.call(
            "report", self._principal, model, parse_time(start, now), parse_time(end, now)
        )
        if html_path is not None:
            Path(html_path).write_text(render_html(rep), encoding="utf-8")
            rep["html_path"] = str(html_path)
        return rep

    def report_text(self, model: str, start: Any = None, end: Any = None) -> str:
        """:meth:`report` as readable text."""
        return render_text(self.report(model, start, end))

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        """Alerts (``state``: pending | firing | resolved | None for all), newest first."""
        return self._actor.call("alerts", self._principal, state)

    def resolve_alert(self, alert_id: str) -> dict[str, Any]:
        """Resolve a firing alert (e.g. acknowledge a canary rollback)."""
        return self._actor.call("resolve_alert", self._principal, alert_id)

    def evaluate(self) -> dict[str, Any]:
        """Evaluate rules and canaries now (the actor also does it periodically)."""
        return self._actor.call("evaluate")

    def apply_config(
        self, config: str | Path | dict[str, Any] | MonitoringConfig
    ) -> dict[str, Any]:
        """Replace the monitoring config (a YAML path, dict or MonitoringConfig); persisted."""
        if isinstance(config, str | Path):
            cfg = load_monitoring_config(config)
        elif isinstance(config, MonitoringConfig):
            cfg = config
        else:
            cfg = load_config(MonitoringConfig, config, "monitoring config")
        return self._actor.call(
            "apply_config", self._principal, cfg.model_dump(mode="json", by_alias=True)
        )

    # -- metrics ---------------------------------------------------------------------------------

    def metrics(self, model: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Current gauge values of ``model`` (all models if None)."""
        return self._actor.call("gauges", model)

    def metrics_url(self) -> str:
        """The monitor's Prometheus endpoint (``http://host:port/metrics``)."""
        return self._actor.call("metrics_url")

    def metrics_text(self) -> str:
        return self._actor.call("metrics_text")

    def signal(
        self, metric: str, window: str | float = "5m", by: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """One signal's samples now (what an alert rule on ``metric`` would see)."""
        window_s = (
            window if isinstance(window, int | float) else parse_duration(window).total_seconds()
        )
        return self._actor.call("signal", metric, float(window_s), by)

    # -- canaries --------------------------------------------------------------------------------

    def canary(self, model: str | None = None) -> list[dict[str, Any]]:
        """Canary runs the monitor drives (status, weight, step, decisions)."""
        return self._actor.call("canary_status", model)

    def set_traffic_controller(self, fn: Callable[..., Any] | None) -> None:
        """Replace how canary weight changes are applied:
        ``fn(model, *, canary_version, canary_weight, reason)`` (None: registry set_traffic).
        ``fn`` is pickled into the monitor actor."""
        self._actor.call("set_traffic_controller", fn)

    def stats(self) -> dict[str, Any]:
        return self._actor.call("stats")


class PredictionLogger:
    """A bounded, non-blocking buffer of prediction and feedback records with a background
    flusher (what the gateway embeds).

    Args:
        target: an ``ActorClient`` on the monitor (or anything with ``.remote(method, ...)``);
            ignored when ``send`` is given.
        source: the name reported with the records (``gateway``...).
        capacity: records buffered (predictions + feedback); beyond it new ones are dropped
            and counted.
        batch_size: records per call to the monitor.
        flush_interval_s: longest a record waits before it is shipped.
        send: ``fn(kind, records, dropped)`` instead of calling the actor (tests, adapters);
            ``kind`` is ``predictions`` or ``feedback``.
        call_timeout_s: how long one shipment may take before it is retried.
    """

    def __init__(
        self,
        target: Any = None,
        *,
        source: str = "sdk",
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        send: Sender | None = None,
        call_timeout_s: float = 30.0,
        start: bool = True,
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
        self._send = send or self._send_to_actor
        self._buf: dict[str, deque[dict[str, Any]]] = {"predictions": deque(), "feedback": deque()}
        self._cond = threading.Condition()
        self._inflight = 0
        self._stopping = False
        self._counts = {"logged": 0, "sent": 0, "dropped": 0, "rejected": 0, "failed_batches": 0}
        self._unreported_dropped = 0
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
            if self._stopping:
                self._drop(1)
                return False
            if len(self._buf["predictions"]) + len(self._buf["feedback"]) >= self.capacity:
                self._drop(1)
                return False
            self._buf[kind].append(rec)
            self._counts["logged"] += 1
            if len(self._buf[kind]) >= self.batch_size:
                self._cond.notify()
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

        from raymlp.client._rpc import call

        name = getattr(self._target, "name", "monitor")
        if kind == "predictions":
            ref = self._target.remote("log_predictions", records, self.source, dropped)
        else:
            ref = self._target.remote("log_feedback", records)
        try:
            call(ref, timeout=self.call_timeout_s, actor=name)
        except UnavailableError:
            self._target._handle = None  # re-resolve after a restart
            raise
        except ray.exceptions.RayError as e:
            raise UnavailableError(f"monitor call failed: {e}", actor=name) from e

    def _take(self) -> tuple[str, list[dict[str, Any]], int] | None:
        for kind in ("predictions", "feedback"):  # predictions first: labels join onto them
            buf = self._buf[kind]
            if buf:
                batch = [buf.popleft() for _ in range(min(self.batch_size, len(buf)))]
                dropped = self._unreported_dropped if kind == "predictions" else 0
                self._unreported_dropped -= dropped
                return kind, batch, dropped
        if self._unreported_dropped:
            dropped, self._unreported_dropped = self._unreported_dropped, 0
            return "predictions", [], dropped
        return None

    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                if not (
                    self._buf["predictions"] or self._buf["feedback"] or self._unreported_dropped
                ):
                    if self._stopping:
                        return
                    self._cond.wait(self.flush_interval_s)
                item = self._take()
                if item is None:
                    continue
                self._inflight += 1
            kind, batch, dropped = item
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
                if ok:
                    self._counts["sent"] += len(batch)
                    backoff = 0.05
                else:
                    self._counts["failed_batches"] += 1
                    self._unreported_dropped += dropped
                    room = (
                        self.capacity - len(self._buf["predictions"]) - len(self._buf["feedback"])
                    )
                    keep = batch[: max(room, 0)]
                    self._buf[kind].extendleft(reversed(keep))
                    if len(keep) < len(batch):
                        self._drop(len(batch) - len(keep))
                self._cond.notify_all()
                if not ok:
                    if self._stopping:
                        return
                    self._cond.wait(backoff)
                    backoff = min(backoff * 2, 5.0)

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
            while (
                self._buf["predictions"]
                or self._buf["feedback"]
                or self._inflight
                or self._unreported_dropped
            ):
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
        return ok

    def stats(self) -> dict[str, Any]:
        """``logged``, ``sent``, ``dropped``, ``rejected``, ``failed_batches``, ``queued``."""
        with self._cond:
            return {
                **self._counts,
                "queued": len(self._buf["predictions"]) + len(self._buf["feedback"]),
                "last_error": self.last_error,
            }
