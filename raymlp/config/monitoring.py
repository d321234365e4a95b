"""``configs/monitoring/*.yaml``: alert rules, drift thresholds, canary policy (the monitor).

Named from platform.yaml (``monitor.config_file``; read by ``load_platform_config``) or applied
at runtime with ``p.monitor.apply_config(path)``.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from raymlp.config._base import Duration, StrictModel, format_duration, load_config_file
from raymlp.config.webhooks import WebhookTarget

__all__ = [
    "MONITOR_METRICS",
    "MONITOR_SPLITTABLE",
    "Severity",
    "AlertRule",
    "DriftSettings",
    "CanaryPolicy",
    "AlertWebhook",
    "ModelMonitorSettings",
    "MonitoringConfig",
    "load_monitoring_config",
]

#: Signals an alert rule can watch, with the labels each series carries. ``by`` (version, route,
#: tenant) splits the performance and accuracy signals further.
MONITOR_METRICS: dict[str, tuple[str, ...]] = {
    "request_count": ("model",),
    "request_rate": ("model",),
    "error_rate": ("model",),
    "latency_p50_seconds": ("model",),
    "latency_p99_seconds": ("model",),
    "accuracy": ("model",),
    "auc": ("model",),
    "feedback_count": ("model",),
    "feature_drift_psi": ("model", "feature"),
    "feature_drift_ks": ("model", "feature"),
    "feature_drift_wasserstein": ("model", "feature"),
    "feature_drift_js": ("model", "feature"),
    "feature_drifted": ("model", "feature"),
    "drifted_feature_share": ("model",),
    "prediction_drift_psi": ("model",),
    "feature_missing_ratio": ("model", "feature"),
    "feature_out_of_range_ratio": ("model", "feature"),
    "schema_violation_ratio": ("model",),
    "feature_freshness_seconds": ("view",),
    "fairness_disparate_impact": ("model", "attribute"),
    "fairness_accuracy_gap": ("model", "attribute"),
    "prediction_log_dropped": ("source",),
}
#: Signals a rule may split with ``by``.
MONITOR_SPLITTABLE = frozenset(
    {
        "request_count",
        "request_rate",
        "error_rate",
        "latency_p50_seconds",
        "latency_p99_seconds",
        "accuracy",
        "auc",
        "feedback_count",
    }
)
Severity = Literal["info", "warning", "critical"]
_RULE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,79}$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")


class AlertRule(StrictModel):
    """One alert rule: ``metric condition threshold`` over a sliding ``window``, held ``for``
    a while before it fires. One alert per matching series (e.g. per feature), deduplicated."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_default=True, populate_by_name=True
    )

    name: str = Field(description="Unique rule name (the ``rule`` label of alerts).")
    metric: str = Field(description=f"Signal watched: one of {', '.join(MONITOR_METRICS)}.")
    condition: Literal[">", ">=", "<", "<=", "==", "!="] = Field(
        ">", description="Comparison of the signal with the threshold that means 'bad'."
    )
    threshold: float = Field(description="The value compared against.")
    window: Duration = Field(
        timedelta(minutes=5), description="Sliding window the signal is computed over."
    )
    for_: Duration = Field(
        timedelta(0),
        alias="for",
        description="How long the condition must hold before the alert fires (pending until).",
    )
    severity: Severity = Field("warning", description="info, warning or critical.")
    match: dict[str, str] = Field(
        default_factory=dict,
        description="Only series whose labels equal these (e.g. {model: customer-churn}).",
    )
    by: list[Literal["version", "route", "tenant"]] = Field(
        default_factory=list,
        description="Split performance/accuracy signals per version, route and/or tenant.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels attached to the alert (team, runbook...)."
    )
    min_count: int = Field(
        1,
        ge=0,
        description="Series with fewer observations in the window are not evaluated "
        "(requests, labelled requests or feature values, as the signal counts them).",
    )
    description: str = Field("", description="Shown with the alert.")

    @field_validator("name")
    @classmethod
    def _rule_name(cls, v: str) -> str:
        if not _RULE_NAME_RE.match(v):
            raise ValueError(
                f"rule name {v!r} is not valid (rule: a letter, then up to 79 of A-Z a-z 0-9 _ -)"
            )
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in MONITOR_METRICS:
            raise ValueError(
                f"metric {v!r} is not a monitor signal (rule: one of {', '.join(MONITOR_METRICS)})"
            )
        return v

    @field_validator("match", "labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not _LABEL_RE.match(k):
                raise ValueError(f"label name {k!r} is not valid (rule: [a-zA-Z_][a-zA-Z0-9_]*)")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: timedelta) -> timedelta:
        if v.total_seconds() <= 0:
            raise ValueError(f"window {format_duration(v)!r} is empty (rule: > 0)")
        return v

    @model_validator(mode="after")
    def _by(self) -> AlertRule:
        if self.by and self.metric not in MONITOR_SPLITTABLE:
            raise ValueError(
                f"by {self.by!r} cannot split {self.metric!r} "
                f"(rule: only {', '.join(sorted(MONITOR_SPLITTABLE))})"
            )
        return self


class DriftSettings(StrictModel):
    """When a feature counts as drifted: an effect size (PSI, normed Wasserstein,
    Jensen-Shannon) at or above its threshold, confirmed by a significant test (KS or
    chi-square p-value below ``p_value``). At large n the tests flag negligible shifts, so the
    effect sizes decide; the p-value only keeps small windows from calling noise drift."""

    window: Duration = Field(
        timedelta(hours=1), description="Sliding window of live traffic compared to the reference."
    )
    min_samples: int = Field(
        100, ge=1, description="Fewer present values in the window: no drift verdict for it."
    )
    psi_threshold: float = Field(0.2, gt=0, description="PSI at or above this is drift.")
    wasserstein_threshold: float = Field(
        0.1, gt=0, description="Wasserstein distance / reference std at or above this is drift."
    )
    js_threshold: float = Field(
        0.1, gt=0, le=1, description="Jensen-Shannon distance (base 2) at or above this is drift."
    )
    p_value: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="A drift verdict also needs the KS (numeric) or chi-square (categorical) "
        "p-value below this: small windows do not flag sampling noise, while at large n every "
        "p-value is tiny and the effect sizes decide.",
    )
    out_of_range_tolerance: float = Field(
        0.0,
        ge=0,
        description="A value counts as out of range beyond [min - t*span, max + t*span] of the "
        "training profile (span = max - min).",
    )


class CanaryPolicy(StrictModel):
    """How a canary advances through its step plan, and when it is rolled back."""

    enabled: bool = Field(True, description="Analyse canaries at all.")
    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        description="Canary traffic percentages, in order; the last is normally 100.",
    )
    min_requests: int = Field(
        100, ge=1, description="Canary requests needed in a step before it can advance."
    )
    min_step_duration: Duration = Field(
        timedelta(minutes=1), description="Time spent at a step before it can advance."
    )
    max_error_rate_delta: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Canary error rate minus stable error rate above this: roll back.",
    )
    max_p99_ratio: float = Field(
        1.5, gt=0, description="Canary p99 latency / stable p99 above this: roll back."
    )
    max_drift_psi: float = Field(
        0.25,
        gt=0,
        description="PSI between canary and stable prediction distributions above this: roll back.",
    )
    significance: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="An error-rate regression must also be significant at this level "
        "(one-sided two-proportion z-test).",
    )
    min_stable_requests: int = Field(
        20, ge=0, description="Stable requests needed in the step window for a comparison."
    )
    auto_advance: bool = Field(True, description="Move to the next step when the canary holds.")
    auto_rollback: bool = Field(True, description="Set the canary weight to 0 on regression.")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("steps [] is empty (rule: at least one percentage)")
        for s in v:
            if not 0 < s <= 100:
                raise ValueError(f"step {s!r} is not a percentage (rule: 0 < step <= 100)")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"steps {v!r} are not increasing (rule: strictly increasing)")
        return v


class AlertWebhook(WebhookTarget):
    """An HTTP endpoint alerts are POSTed to (one JSON alert per request, on firing/resolved)."""

    min_severity: Severity = Field("warning", description="Only alerts at least this severe.")


class ModelMonitorSettings(StrictModel):
    """Per-model monitoring settings."""

    fairness_attribute: str | None = Field(
        None, description="Feature whose values slice the fairness report (e.g. 'contract')."
    )
    positive_label: str | None = Field(
        None,
        description="Label value that counts as the positive class for AUC (default: 1/true, "
        "or the model's second class name).",
    )
    feature_views: list[str] = Field(
        default_factory=list, description="Feature views the model reads (freshness, report)."
    )


class MonitoringConfig(StrictModel):
    """``configs/monitoring/*.yaml``: alert rules, drift thresholds, canary policy.

    Load with :func:`load_monitoring_config`, or name the file in platform.yaml
    (``monitor.config_file``), or apply it at runtime with ``p.monitor.apply_config(path)``.
    """

    rules: list[AlertRule] = Field(default_factory=list, description="Alert rules.")
    drift: DriftSettings = Field(default_factory=DriftSettings, description="Drift verdicts.")
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy, description="Canary analysis.")
    models: dict[str, ModelMonitorSettings] = Field(
        default_factory=dict, description="Per-model settings, by model name."
    )
    freshness: dict[str, Duration] = Field(
        default_factory=dict,
        description="Feature view -> expected max age of its newest event (feeds "
        "feature_freshness_seconds; alert on it with a rule).",
    )
    webhooks: list[AlertWebhook] = Field(
        default_factory=list, description="HTTP endpoints alerts are delivered to."
    )
    deliver_to_registry: bool = Field(
        True, description="Also record alert transitions in the registry's event stream."
    )
    repeat_interval: Duration = Field(
        timedelta(0),
        description="Re-notify a still-firing alert this often (0: only on firing/resolved).",
    )

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, v: list[AlertRule]) -> list[AlertRule]:
        seen: set[str] = set()
        for r in v:
            if r.name in seen:
                raise ValueError(f"rule name {r.name!r} is used twice (rule: unique names)")
            seen.add(r.name)
        return v


def load_monitoring_config(path: str | os.PathLike[str]) -> MonitoringConfig:
    """Load a ``configs/monitoring/*.yaml`` file; a bad file raises one ConfigError.

    Example::

        cfg = load_monitoring_config("configs/monitoring/churn.yaml")
        cfg.canary.steps      # [5.0, 25.0, 50.0, 100.0]
    """
    return load_config_file(MonitoringConfig, path)
