"""Prometheus metrics of the monitor, with stable names, and their Ray-dashboard mirror.

Counters and histograms are updated as records arrive; gauges (drift, quality, windowed error
rate and latency quantiles, accuracy, alerts...) are recomputed every evaluation and published
as one atomic snapshot (a scrape never sees half an update). Every series name is part of the
public contract — dashboards and alert rules depend on them:

=============================================  ==========================================
series                                         labels
=============================================  ==========================================
raymlp_predictions_total                        model, version, route, tenant
raymlp_prediction_errors_total                  model, version, route, tenant, code
raymlp_prediction_latency_seconds (histogram)   model, version, route
raymlp_schema_violations_total                  model, feature, kind
raymlp_feedback_total                           model
raymlp_prediction_log_rows_total                table
raymlp_prediction_log_dropped_total             source
raymlp_prediction_log_duplicates_total          kind (prediction | feedback)
raymlp_prediction_log_commit_seconds (hist.)    table
raymlp_canary_decisions_total                   model, decision
raymlp_unknown_model_records_total              reason (unregistered_model | unknown_tenant)
raymlp_alert_notifications_total                channel, outcome
raymlp_feature_drift_psi / _ks / _ks_pvalue /   model, feature
  _wasserstein / _js, raymlp_feature_drifted
raymlp_prediction_drift_psi                     model
raymlp_feature_missing_ratio                    model, feature
raymlp_feature_out_of_range_ratio               model, feature
raymlp_schema_violation_ratio                   model
raymlp_error_rate                               model, version, route
raymlp_requests_per_second                      model, version, route
raymlp_prediction_latency_p50_seconds / _p99_   model, version, route
raymlp_model_accuracy / raymlp_model_auc        model, version
raymlp_feature_view_freshness_seconds           view
raymlp_fairness_disparate_impact                model, attribute
raymlp_alerts_firing                            rule, severity
raymlp_canary_weight                            model, version
raymlp_feedback_pending                         (none)
=============================================  ==========================================

The Ray mirror (:class:`RayMetricsMirror`) re-exports the key series through
``ray.util.metrics``; Ray's exporter prefixes them with ``ray_`` (``ray_raymlp_...``) and they
appear in the dashboard's metrics view and Ray's own Prometheus/Grafana integration.

**Bounded.** Every label value is bounded: ``model``/``version`` only name registered model
versions and ``tenant`` a configured tenant (the monitor drops other records before they reach
here, counting them in ``raymlp_unknown_model_records_total``); values a request chooses
(an error ``code``, an unexpected ``feature`` name, a logger ``source``) keep at most
:data:`LABEL_BUDGET` distinct values per model (per series for ``source``), the rest read
``(other)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

__all__ = [
    "GAUGES",
    "LABEL_BUDGET",
    "LATENCY_BUCKETS_S",
    "LabelBudget",
    "MonitorMetrics",
    "OTHER_LABEL",
    "RayMetricsMirror",
    "GaugeSnapshot",
]

#: Distinct caller-chosen values one label keeps per scope before they read :data:`OTHER_LABEL`.
LABEL_BUDGET = 32
OTHER_LABEL = "(other)"


class LabelBudget:
    """Caps the distinct values of a caller-chosen label per scope (a model, a series): the
    first ``limit`` values seen are kept, later new ones become ``(other)``, so no input can
    mint series without bound.

    Example::

        budget = LabelBudget(limit=2)
        [budget(("code", "churn"), c) for c in ("a", "b", "c", "a")]  # a, b, (other), a
    """

    def __init__(self, limit: int = LABEL_BUDGET) -> None:
        self.limit = limit
        self._seen: dict[Hashable, set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, scope: Hashable, value: str) -> str:
        with self._lock:
            seen = self._seen.setdefault(scope, set())
            if value in seen:
                return value
            if len(seen) >= self.limit:
                return OTHER_LABEL
            seen.add(value)
            return value

logger = logging.getLogger(__name__)

#: Buckets of the exported latency histogram (seconds).
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_MF = ("model", "feature")
_MVR = ("model", "version", "route")
#: gauge name -> (help, label names)
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "raymlp_feature_drift_psi": ("PSI of the feature vs the training profile (drift window)", _MF),
    "raymlp_feature_drift_ks": ("Kolmogorov-Smirnov D vs the training profile", _MF),
    "raymlp_feature_drift_ks_pvalue": ("KS p-value (context only: verdicts use effect sizes)", _MF),
    "raymlp_feature_drift_wasserstein": ("Wasserstein distance / reference std", _MF),
    "raymlp_feature_drift_js": ("Jensen-Shannon distance (categorical features)", _MF),
    "raymlp_feature_drifted": ("1 when the feature is judged drifted, else 0", _MF),
    "raymlp_prediction_drift_psi": ("PSI of the predicted probability vs training", ("model",)),
    "raymlp_feature_missing_ratio": ("Share of requests missing the feature", _MF),
    "raymlp_feature_out_of_range_ratio": ("Share of values outside the training range", _MF),
    "raymlp_schema_violation_ratio": ("Share of requests breaking the input schema", ("model",)),
    "raymlp_error_rate": ("Error rate over the last 5 minutes", _MVR),
    "raymlp_requests_per_second": ("Requests per second over the last 5 minutes", _MVR),
    "raymlp_prediction_latency_p50_seconds": ("Median latency over the last 5 minutes", _MVR),
    "raymlp_prediction_latency_p99_seconds": ("p99 latency over the last 5 minutes", _MVR),
    "raymlp_model_accuracy": ("Accuracy on labelled feedback (drift window)", ("model", "version")),
    "raymlp_model_auc": ("ROC AUC on labelled feedback (drift window)", ("model", "version")),
    "raymlp_feature_view_freshness_seconds": (
        "Age of the newest event of a feature view",
        ("view",),
    ),
    "raymlp_fairness_disparate_impact": (
        "Lowest / highest positive rate over slices",
        ("model", "attribute"),
    ),
    "raymlp_alerts_firing": ("Alerts firing", ("rule", "severity")),
    "raymlp_canary_weight": ("Canary traffic percentage set by the monitor", ("model", "version")),
    "raymlp_feedback_pending": ("Labels waiting for their prediction record", ()),
}


class GaugeSnapshot:
    """A Prometheus collector serving the latest gauge values, swapped atomically."""

    def __init__(self) -> None:
        self._values: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        self._lock = threading.Lock()

    def set(self, values: Mapping[str, Iterable[tuple[Mapping[str, str], float]]]) -> None:
        """Replace every gauge: ``{name: [(labels, value), ...]}``."""
        snap: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        for name, rows in values.items():
            _, labels = GAUGES[name]
            snap[name] = [(tuple(str(lab.get(k, "")) for k in labels), float(v)) for lab, v in rows]
        with self._lock:
            self._values = snap

    def get(self) -> dict[str, list[tuple[tuple[str, ...], float]]]:
        with self._lock:
            return dict(self._values)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        values = self.get()
        for name, (doc, labels) in GAUGES.items():
            fam = GaugeMetricFamily(name, doc, labels=list(labels))
            for lv, v in values.get(name, []):
                fam.add_metric(list(lv), v)
            yield fam


class MonitorMetrics:
    """Every Prometheus series of one monitor, in its own registry (several monitors — e.g.
    tests — can live in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.predictions = Counter(
            "raymlp_predictions",
            "Prediction records received",
            ["model", "version", "route", "tenant"],
            registry=r,
        )
        self.errors = Counter(
            "raymlp_prediction_errors",
            "Failed requests by error code",
            ["model", "version", "route", "tenant", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "raymlp_prediction_latency_seconds",
            "End-to-end latency at the gateway",
            list(_MVR),
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.violations = Counter(
            "raymlp_schema_violations",
            "Input schema violations (missing/unexpected feature, type, rejected request)",
            ["model", "feature", "kind"],
            registry=r,
        )
        self.feedback = Counter(
            "raymlp_feedback", "Labels joined to their prediction", ["model"], registry=r
        )
        self.log_rows = Counter(
            "raymlp_prediction_log_rows", "Rows committed to the logs", ["table"], registry=r
        )
        self.log_dropped = Counter(
            "raymlp_prediction_log_dropped",
            "Records clients dropped on a full buffer",
            ["source"],
            registry=r,
        )
        self.log_duplicates = Counter(
            "raymlp_prediction_log_duplicates",
            "Records dropped because the log already holds their request id (a client's retry)",
            ["kind"],
            registry=r,
        )
        self.log_commit = Histogram(
            "raymlp_prediction_log_commit_seconds",
            "Duration of one Delta commit of the logs",
            ["table"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.canary_decisions = Counter(
            "raymlp_canary_decisions", "Canary step decisions", ["model", "decision"], registry=r
        )
        self.notifications = Counter(
            "raymlp_alert_notifications",
            "Alert deliveries by channel and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.unknown_records = Counter(
            "raymlp_unknown_model_records",
            "Records dropped because their model version or tenant is not registered",
            ["reason"],
            registry=r,
        )
        self.budget = LabelBudget()
        self.gauges = GaugeSnapshot()
        r.register(self.gauges)

    def observe_batch(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Count a batch of normalised prediction records."""
        counts: dict[tuple[str, str, str, str], int] = {}
        errors: dict[tuple[str, ...], int] = {}
        for rec in records:
            v = "" if rec["version"] is None else str(rec["version"])
            k = (rec["model"], v, rec["route"], rec["tenant"])
            counts[k] = counts.get(k, 0) + 1
            if rec["status"] == "error":
                code = self.budget(("code", rec["model"]), rec["error_code"] or "error")
                ek: tuple[str, ...] = (*k, code)
                errors[ek] = errors.get(ek, 0) + 1
            if rec["latency_ms"] is not None:
                self.latency.labels(rec["model"], v, rec["route"]).observe(
                    rec["latency_ms"] / 1000.0
                )
        for k, n in counts.items():
            self.predictions.labels(*k).inc(n)
        for ek, n in errors.items():
            self.errors.labels(*ek).inc(n)

    def exposition(self) -> bytes:
        """The text exposition format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)


#: Series mirrored to Ray (name, kind, tag keys).
_RAY_GAUGES = (
    "raymlp_feature_drift_psi",
    "raymlp_feature_missing_ratio",
    "raymlp_error_rate",
    "raymlp_prediction_latency_p99_seconds",
    "raymlp_model_accuracy",
    "raymlp_alerts_firing",
    "raymlp_canary_weight",
    "raymlp_prediction_drift_psi",
)


class RayMetricsMirror:
    """Key series re-exported through ``ray.util.metrics`` (Ray dashboard → Metrics)."""

    def __init__(self) -> None:
        from ray.util import metrics as rm  # only inside a Ray worker

        self._predictions = rm.Counter(
            "raymlp_predictions",  # Ray adds "_total"
            description="Prediction records received",
            tag_keys=("model", "version", "route", "tenant"),
        )
        self._latency = rm.Histogram(
            "raymlp_prediction_latency_seconds",
            description="End-to-end latency at the gateway",
            boundaries=list(LATENCY_BUCKETS_S),
            tag_keys=_MVR,
        )
        self._gauges = {
            name: rm.Gauge(name, description=GAUGES[name][0], tag_keys=GAUGES[name][1])
            for name in _RAY_GAUGES
        }
        self._last: dict[str, set[tuple[str, ...]]] = {}

    def observe_batch(self, records: Iterable[Mapping[str, Any]]) -> None:
        counts: dict[tuple[str, str, str, str], int] = {}
        for rec in records:
            v = "" if rec["version"] is None else str(rec["version"])
            k = (rec["model"], v, rec["route"], rec["tenant"])
            counts[k] = counts.get(k, 0) + 1
            if rec["latency_ms"] is not None:
                self._latency.observe(
                    rec["latency_ms"] / 1000.0, tags={"model": k[0], "version": v, "route": k[2]}
                )
        for (m, v, r, t), n in counts.items():
            self._predictions.inc(n, tags={"model": m, "version": v, "route": r, "tenant": t})

    def set_gauges(self, snapshot: Mapping[str, list[tuple[tuple[str, ...], float]]]) -> None:
        for name, gauge in self._gauges.items():
            keys = GAUGES[name][1]
            seen = set()
            for lv, v in snapshot.get(name, []):
                gauge.set(v, tags=dict(zip(keys, lv)))
                seen.add(lv)
            for gone in self._last.get(name, set()) - seen:  # a vanished series reads 0
                gauge.set(0.0, tags=dict(zip(keys, gone)))
            self._last[name] = seen
