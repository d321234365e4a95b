"""Shadow traffic: a copy of live requests to a candidate version, compared and logged.

A shadow call starts beside the live one and is never awaited by the request: the caller's
answer and latency do not depend on it. Calls beyond ``max_inflight`` are skipped (counted), not
queued, so a slow candidate cannot pile up work. When both answers are in, the runner compares
them (same prediction? probability difference) and reports a ``shadow`` record::

    runner = ShadowRunner(settings, report=log.prediction)
    runner.start("churn", 4, call_shadow, primary_future, base_record)
    runner.stats("churn")   # {"started", "skipped", "failed", "compared", "agreement", ...}
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from raymlp.config import ServeShadowSettings

__all__ = ["ShadowRunner", "ShadowStats"]

logger = logging.getLogger(__name__)


class ShadowStats:
    """Counters of one model's shadow traffic."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.started = 0
        self.skipped = 0
        self.failed = 0
        self.compared = 0
        self.agreed = 0
        self.abs_diff_sum = 0.0
        self.max_abs_diff = 0.0
        self.latency_ms_sum = 0.0

    def to_dict(self) -> dict[str, Any]:
        n = self.compared
        return {
            "version": self.version,
            "started": self.started,
            "skipped": self.skipped,
            "failed": self.failed,
            "compared": n,
            "agreement": self.agreed / n if n else None,
            "mean_abs_diff": self.abs_diff_sum / n if n else None,
            "max_abs_diff": self.max_abs_diff if n else None,
            "mean_latency_ms": self.latency_ms_sum / n if n else None,
        }


class ShadowRunner:
    """Starts, bounds, compares and reports shadow calls (see the module docstring)."""

    def __init__(
        self,
        settings: ServeShadowSettings,
        report: Callable[[dict[str, Any]], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._report = report
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task] = set()
        self._stats: dict[str, ShadowStats] = {}

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def stats(self, model: str) -> dict[str, Any]:
        return self._stats.setdefault(model, ShadowStats()).to_dict()

    def start(
        self,
        model: str,
        version: int,
        call: Callable[[], Awaitable[dict[str, Any]]],
        primary: asyncio.Future,
        record: dict[str, Any],
    ) -> bool:
        """Start one shadow call (sampled and bounded); returns whether it started."""
        st = self._stats.setdefault(model, ShadowStats())
        if st.version != version:
            self._stats[model] = st = ShadowStats()
            st.version = version
        if self.settings.sample_percent < 100 and (
            self._rng.random() * 100 >= self.settings.sample_percent
        ):
            return False
        if len(self._tasks) >= self.settings.max_inflight:
            st.skipped += 1
            return False
        st.started += 1
        task = asyncio.ensure_future(self._run(st, version, call, primary, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(
        self,
        st: ShadowStats,
        version: int,
        call: Callable[[], Awaitable[dict[str, Any]]],
        primary: asyncio.Future,
        record: dict[str, Any],
    ) -> None:
        t0 = time.perf_counter()
        rec = {**record, "route": "shadow", "version": version}
        try:
            out = await asyncio.wait_for(call(), self.settings.timeout_s)
        except Exception as e:  # noqa: BLE001 - a failing shadow is data, never an error
            st.failed += 1
            code = getattr(e, "code", None) or (
                "timeout"
                if isinstance(e, (TimeoutError, asyncio.TimeoutError))
                else type(e).__name__
            )
            self._emit(
                {
                    **rec,
                    "status": "error",
                    "error_code": str(code),
                    "prediction": None,
                    "probability": None,
                    "latency_ms": (time.perf_counter() - t0) * 1000,
                }
            )
            return
        latency_ms = (time.perf_counter() - t0) * 1000
        self._emit(
            {
                **rec,
                "status": "ok",
                "prediction": out.get("prediction"),
                "probability": out.get("probability"),
                "latency_ms": latency_ms,
            }
        )
        try:
            live = await asyncio.wait_for(asyncio.shield(primary), self.settings.timeout_s)
        except Exception:  # noqa: BLE001 - the live request failed: nothing to compare
            return
        if not live or live.get("probability") is None or out.get("probability") is None:
            return
        st.compared += 1
        st.latency_ms_sum += latency_ms
        if live.get("prediction") == out.get("prediction"):
            st.agreed += 1
        diff = abs(float(live["probability"]) - float(out["probability"]))
        st.abs_diff_sum += diff
        st.max_abs_diff = max(st.max_abs_diff, diff)

    def _emit(self, record: dict[str, Any]) -> None:
        if self._report is None:
            return
        try:
            self._report(record)
        except Exception:  # noqa: BLE001 - logging must never break serving
            logger.exception("shadow record could not be logged")

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for the shadow calls in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
