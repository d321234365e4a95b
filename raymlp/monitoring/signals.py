"""Signals: the named, labelled numbers alert rules and gauges watch, computed over a window.

``Signals(state, drift).series("error_rate", window_s=300, now=t)`` returns one
:class:`Sample` per model (or per model and version/route/tenant with ``by``); drift and quality
signals are per model and feature, computed against the reference profile of the model's primary
version (the one answering most primary-route requests in the window). Each sample carries the
number of observations behind it, so rules can ignore thin series (``min_count``). Results are
memoised per (window, now) for one evaluation pass::

    sig = Signals(state, DriftSettings())
    [s.value for s in sig.series("feature_drift_psi", 3600, now)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raymlp.config import MONITOR_METRICS, DriftSettings
from raymlp.errors import ValidationError
from raymlp.monitoring.accuracy import fairness_report
from raymlp.monitoring.drift import feature_drift, prediction_drift
from raymlp.monitoring.live_windows import TrafficState

__all__ = ["Sample", "Signals", "DRIFT_STATS"]

#: drift signal -> key of the per-feature drift row
DRIFT_STATS = {
    "feature_drift_psi": "psi",
    "feature_drift_ks": "ks",
    "feature_drift_wasserstein": "wasserstein",
    "feature_drift_js": "js",
    "feature_missing_ratio": "missing_ratio",
    "feature_out_of_range_ratio": "out_of_range_ratio",
}


@dataclass(frozen=True)
class Sample:
    """One value of one series: ``metric{labels} = value`` over ``count`` observations."""

    metric: str
    labels: Mapping[str, str]
    value: float
    count: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)


class Signals:
    """Computes signals from a :class:`TrafficState`.

    Args:
        state: the windows.
        drift: drift thresholds (verdicts, ``min_samples``).
        freshness: () → {view: age in seconds} (feature view freshness; optional).
    """

    def __init__(
        self,
        state: TrafficState,
        drift: DriftSettings,
        freshness: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.state = state
        self.drift_settings = drift
        self._freshness = freshness
        self._memo: dict[tuple, Any] = {}

    def reset(self) -> None:
        """Forget memoised results (call once per evaluation pass)."""
        self._memo.clear()

    def _cached(self, key: tuple, fn: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    # -- drift rows ----------------------------------------------------------------------------

    def drift_rows(
        self, model: str, start: float | None, end: float | None, version: int | None = None
    ) -> dict[str, Any] | None:
        """``{"version", "features": [...], "prediction", "records", "violation_records"}`` for
        a model's primary (or given) version; None without a version or profile."""

        def compute() -> dict[str, Any] | None:
            v = version if version is not None else self.state.primary_version(model, start, end)
            if v is None:
                return None
            prof = self.state.profile(model, v)
            cell = self.state.features(model, v, start, end)
            out: dict[str, Any] = {
                "version": v,
                "records": cell.records,
                "violation_records": cell.violation_records,
                "violations": [
                    {"feature": f, "kind": k, "count": n}
                    for (f, k), n in sorted(cell.violations.items())
                ],
                "features": [],
                "prediction": None,
                "profile": prof is not None,
            }
            if prof is not None:
                out["features"] = feature_drift(prof, cell, self.drift_settings)
                out["prediction"] = prediction_drift(prof, cell, self.drift_settings)
            return out

        return self._cached(("drift", model, start, end, version), compute)

    # -- series --------------------------------------------------------------------------------

    def series(
        self, metric: str, window_s: float, now: float, by: Iterable[str] = ()
    ) -> list[Sample]:
        """Every sample of ``metric`` over the window ending at ``now``."""
        if metric not in MONITOR_METRICS:
            raise ValidationError(
                f"unknown signal {metric!r}",
                field="metric",
                value=metric,
                rule=" | ".join(MONITOR_METRICS),
            )
        by = tuple(by)
        return self._cached(
            ("series", metric, window_s, now, by), lambda: self._series(metric, window_s, now, by)
        )

    def _series(
        self, metric: str, window_s: float, now: float, by: tuple[str, ...]
    ) -> list[Sample]:
        start = now - window_s
        out: list[Sample] = []

        def labels(key: tuple) -> dict[str, str]:
            return {"model": key[0], **{b: str(key[i + 1]) for i, b in enumerate(by)}}

        if metric in (
            "request_count",
            "request_rate",
            "error_rate",
            "latency_p50_seconds",
            "latency_p99_seconds",
        ):
            for key, c in sorted(self.state.perf(start, now, by=by).items()):
                if metric == "request_count":
                    out.append(Sample(metric, labels(key), float(c.requests), c.requests))
                elif metric == "request_rate":
                    out.append(Sample(metric, labels(key), c.requests / window_s, c.requests))
                elif metric == "error_rate" and c.requests:
                    out.append(
                        Sample(
                            metric,
                            labels(key),
                            c.errors / c.requests,
                            c.requests,
                            {"errors": c.errors},
                        )
                    )
                elif metric.startswith("latency_"):
                    q = 0.5 if metric == "latency_p50_seconds" else 0.99
                    v = c.latency_quantile(q)
                    if v is not None:
                        out.append(Sample(metric, labels(key), v, c.latency_count))
            return out
        if metric in ("accuracy", "auc", "feedback_count"):
            for key, ac in sorted(self.state.accuracy(start, now, by=by).items()):
                if metric == "feedback_count":
                    out.append(Sample(metric, labels(key), float(ac.labelled), ac.labelled))
                elif metric == "accuracy" and ac.accuracy is not None:
                    out.append(Sample(metric, labels(key), ac.accuracy, ac.scored))
                elif metric == "auc" and ac.auc is not None:
                    out.append(Sample(metric, labels(key), ac.auc, ac.labelled))
            return out
        if metric == "feature_freshness_seconds":
            ages = self._freshness() if self._freshness is not None else {}
            return [Sample(metric, {"view": v}, float(a), 1) for v, a in sorted(ages.items())]
        if metric == "prediction_log_dropped":
            return [
                Sample(metric, {"source": s}, float(n), n)
                for s, n in sorted(self.state.dropped(start, now).items())
            ]
        for model in self.state.models():
            if metric.startswith("fairness_"):
                out.extend(self._fairness(metric, model, start, now))
                continue
            rows = self.drift_rows(model, start, now)
            if rows is None:
                continue
            if metric == "schema_violation_ratio":
                if rows["records"]:
                    out.append(
                        Sample(
                            metric,
                            {"model": model},
                            rows["violation_records"] / rows["records"],
                            rows["records"],
                        )
                    )
                continue
            if metric == "prediction_drift_psi":
                p = rows["prediction"]
                if p and p["psi"] is not None:
                    out.append(Sample(metric, {"model": model}, p["psi"], p["n"]))
                continue
            if metric == "drifted_feature_share":
                judged = [r for r in rows["features"] if r["n"] >= self.drift_settings.min_samples]
                if judged:
                    share = sum(r["drifted"] for r in judged) / len(judged)
                    out.append(Sample(metric, {"model": model}, share, len(judged)))
                continue
            for r in rows["features"]:
                lab = {"model": model, "feature": r["feature"]}
                if metric == "feature_drifted":
                    if r["n"] >= self.drift_settings.min_samples:
                        out.append(Sample(metric, lab, float(r["drifted"]), r["n"]))
                    continue
                stat = DRIFT_STATS[metric]
                v = r.get(stat)
                if v is None:
                    continue
                count = r["n"]
                if stat == "missing_ratio":
                    count = r["total"]
                elif stat != "out_of_range_ratio" and r["n"] < self.drift_settings.min_samples:
                    # drift statistics on thin windows are noise: reported, never alerted on
                    count = min(count, self.drift_settings.min_samples - 1)
                out.append(Sample(metric, lab, float(v), count))
        return out

    def _fairness(self, metric: str, model: str, start: float, end: float) -> list[Sample]:
        attr = self.state.settings(model).fairness_attribute
        if not attr:
            return []
        rep = self.fairness(model, start, end)
        key = "disparate_impact" if metric == "fairness_disparate_impact" else "accuracy_gap"
        v = rep.get(key)
        if v is None:
            return []
        n = sum(
            s["requests"] if key == "disparate_impact" else s["labelled"] for s in rep["slices"]
        )
        return [Sample(metric, {"model": model, "attribute": attr}, float(v), n)]

    def fairness(self, model: str, start: float | None, end: float | None) -> dict[str, Any]:
        attr = self.state.settings(model).fairness_attribute
        if not attr:
            return {
                "attribute": None,
                "slices": [],
                "disparate_impact": None,
                "accuracy_gap": None,
                "tpr_gap": None,
            }
        return self._cached(
            ("fair", model, start, end),
            lambda: fairness_report(attr, self.state.fairness(model, start, end)),
        )
