"""``p.monitor``: the prediction log, reports, alerts and metrics of the monitor actor.

Two ways in for prediction records:

* :meth:`MonitorClient.log_predictions` / :meth:`MonitorClient.log_feedback` — one blocking
  call per batch (durable on return). For jobs, tests and backfills.
* :class:`~raymlp._private.prediction_logger.PredictionLogger` (``p.monitor.logger()``) — what
  the Serve gateway embeds: ``log(record)`` appends to a bounded in-process buffer and returns
  at once (never blocks the request path, never raises on the request path); a background
  thread ships batches to the monitor. When the buffer is full the record is dropped and
  *counted* (``logger.stats()["dropped"]``, reported to the monitor with the next batch as
  ``raymlp_prediction_log_dropped_total{source}``, and as a ``ray.util.metrics`` counter in the
  caller's process)::

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

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlp._private.prediction_logger import PredictionLogger
from raymlp.config import MonitoringConfig, load_config, load_monitoring_config, parse_duration
from raymlp.errors import ValidationError
from raymlp.monitoring.html import render_html
from raymlp.monitoring.report import render_text

if TYPE_CHECKING:
    from raymlp.client import Platform

__all__ = ["MonitorClient", "PredictionLogger", "parse_time"]


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

    def __init__(self, platform: Platform) -> None:
        self._p = platform
        self._actor = platform.actor("monitor")

    @property
    def _principal(self) -> dict[str, Any]:
        return self._p.caller.wire()

    # -- ingest --------------------------------------------------------------------------------

    def log_predictions(
        self,
        records: list[dict[str, Any]],
        *,
        source: str = "sdk",
        dropped: int = 0,
        drop_id: str | None = None,
    ) -> dict[str, Any]:
        """Append prediction records (all or nothing; durable on return). Records whose
        ``request_id`` is already logged are skipped (``duplicates``), so a retry is safe;
        ``dropped`` (records lost before sending) is counted once per ``drop_id``."""
        return self._actor.call(
            "log_predictions", self._principal, records, source, dropped, drop_id
        )

    def log_feedback(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Append labels ``{"request_id", "label", "ts"?}``; joined to predictions by id."""
        return self._actor.call("log_feedback", self._principal, records)

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
            credential=self._p.caller,
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
        return self._actor.call("evaluate", self._principal)

    def apply_config(
        self, config: str | Path | dict[str, Any] | MonitoringConfig
    ) -> dict[str, Any]:
        """Replace the monitoring config (a YAML path, dict or MonitoringConfig); persisted.

        Needs an admin: the config applies to every tenant's models."""
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
        return self._actor.call("gauges", self._principal, model)

    def metrics_url(self) -> str:
        """The monitor's Prometheus endpoint (``http://host:port/metrics``)."""
        return self._actor.call("metrics_url", self._principal)

    def metrics_text(self) -> str:
        return self._actor.call("metrics_text", self._principal)

    def signal(
        self, metric: str, window: str | float = "5m", by: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """One signal's samples now (what an alert rule on ``metric`` would see)."""
        window_s = (
            window if isinstance(window, int | float) else parse_duration(window).total_seconds()
        )
        return self._actor.call("signal", self._principal, metric, float(window_s), by)

    # -- canaries --------------------------------------------------------------------------------

    def canary(self, model: str | None = None) -> list[dict[str, Any]]:
        """Canary runs the monitor drives (status, weight, step, decisions)."""
        return self._actor.call("canary_status", self._principal, model)

    def set_traffic_controller(self, fn: Callable[..., Any] | None) -> None:
        """Replace how canary weight changes are applied:
        ``fn(model, *, canary_version, canary_weight, reason)`` (None: registry set_traffic).
        ``fn`` is pickled into the monitor actor."""
        self._actor.call("set_traffic_controller", self._principal, fn)

    def stats(self) -> dict[str, Any]:
        return self._actor.call("stats", self._principal)
