"""The gateway's side of the prediction log: every answered (or failed) request and every
feedback label goes to the monitor, off the request's critical path.

The monitor's :class:`~raymlp._private.prediction_logger.PredictionLogger`
(``services.monitor.logger()`` of the replica-side services, ``raymlp.serving._platform``: a
bounded buffer flushed to the monitor actor in the background, overflow counted) does the
shipping. The last records are also kept
in a bounded in-memory buffer of this gateway replica (``recent``, for ``/v1/models`` stats
and tests); without a monitor installed, that buffer is all there is::

    log = PredictionLog(services, settings)
    log.prediction({"request_id": "r1", "model": "churn", "version": 3, "route": "primary", ...})
    log.feedback("r1", 1)
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from raymlp.config import ServePredictionLog

__all__ = ["PredictionLog"]

logger = logging.getLogger(__name__)


def _monitor_logger(services: Any, settings: ServePredictionLog) -> Any:
    """The monitor's PredictionLogger for this gateway, or None when it cannot start."""
    try:
        return services.monitor.logger(
            capacity=settings.max_buffer,
            flush_interval_s=settings.flush_interval_s,
            spool=settings.spool,
            spool_dir=settings.spool_dir,
        )
    except Exception:  # noqa: BLE001 - no monitor must never mean no serving
        logger.exception("the monitor's prediction logger could not start; logging locally")
        return None


class PredictionLog:
    """Prediction and feedback records of one gateway replica (see the module docstring)."""

    def __init__(self, services: Any, settings: ServePredictionLog) -> None:
        self.settings = settings
        self._sink = _monitor_logger(services, settings) if settings.enabled else None
        self.recent: deque[dict[str, Any]] = deque(maxlen=min(settings.max_buffer, 10_000))
        self.feedback_recent: deque[dict[str, Any]] = deque(maxlen=min(settings.max_buffer, 10_000))
        self.logged = 0
        self.dropped = 0
        self.errors = 0

    @property
    def connected(self) -> bool:
        """Whether records go to the monitor (not just to the local buffer)."""
        return self._sink is not None

    def prediction(self, record: dict[str, Any]) -> None:
        """Log one prediction record (the monitor's contract: request_id, model, version,
        route, tenant, features, prediction, probability, latency_ms, status, error_code, ts)."""
        if not self.settings.enabled:
            return
        record.setdefault("ts", time.time())
        self.logged += 1
        if len(self.recent) == self.recent.maxlen:
            self.dropped += self._sink is None
        self.recent.append(record)
        if self._sink is not None:
            try:
                self._sink.log(record)
            except Exception:  # noqa: BLE001 - never on the request's critical path
                self.errors += 1

    def feedback(self, request_id: str, label: Any, model: str | None = None) -> None:
        """Log a ground-truth label for an earlier prediction."""
        if not self.settings.enabled:
            return
        rec: dict[str, Any] = {"request_id": request_id, "label": label, "ts": time.time()}
        if model is not None:
            rec["model"] = model
        self.feedback_recent.append(rec)
        if self._sink is not None:
            try:
                self._sink.feedback(rec)
            except Exception:  # noqa: BLE001
                self.errors += 1

    def stats(self) -> dict[str, Any]:
        out = {
            "monitor": self.connected,
            "logged": self.logged,
            "dropped": self.dropped,
            "errors": self.errors,
            "buffered": len(self.recent),
        }
        if self._sink is not None:
            try:
                out["shipper"] = self._sink.stats()
            except Exception:  # noqa: BLE001
                pass
        return out

    def close(self, timeout_s: float = 10.0) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close(timeout_s)
            except Exception:  # noqa: BLE001
                logger.exception("prediction logger did not close cleanly")
