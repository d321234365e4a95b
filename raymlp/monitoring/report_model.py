"""The monitoring report of one model over a time range, as typed values.

:meth:`raymlp.monitoring.core.MonitorCore.monitor_report` builds a :class:`MonitorReport`;
:func:`raymlp.monitoring.report.render_text` and :func:`raymlp.monitoring.html.render_html`
only render one. Across the actor boundary (and for ``raymlp monitor report --json``) a report
travels as :meth:`MonitorReport.to_dict`, a plain JSON-able dict;
:meth:`MonitorReport.from_dict` reads it back::

    rep = core.monitor_report("customer-churn", start=t0, end=t1)
    rep.traffic.requests if rep.traffic else 0
    MonitorReport.from_dict(rep.to_dict()) == rep

Drift, fairness, the canary run and alerts stay the dicts their producers
(:mod:`raymlp.monitoring.signals`, :mod:`~raymlp.monitoring.canary`,
:mod:`~raymlp.monitoring.alerts`) return.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from raymlp.monitoring.windows import PerfCell

__all__ = [
    "PerfStats",
    "VersionRoutePerf",
    "TimelinePoint",
    "VersionAccuracy",
    "AccuracySummary",
    "DriftThresholds",
    "MonitorReport",
]


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000.0


@dataclass
class PerfStats:
    """Requests, errors and latency of some traffic over a span of ``seconds``."""

    requests: int
    errors: int
    error_rate: float | None
    rps: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    error_codes: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def _values(c: PerfCell, seconds: float) -> dict[str, Any]:
        return {
            "requests": c.requests,
            "errors": c.errors,
            "error_rate": c.error_rate,
            "rps": c.requests / seconds if seconds > 0 else None,
            "p50_ms": _ms(c.latency_quantile(0.5)),
            "p95_ms": _ms(c.latency_quantile(0.95)),
            "p99_ms": _ms(c.latency_quantile(0.99)),
            "mean_ms": _ms(c.latency_mean_s),
            "error_codes": dict(c.error_codes),
        }

    @classmethod
    def of(cls, c: PerfCell, seconds: float) -> PerfStats:
        return cls(**cls._values(c, seconds))


@dataclass
class VersionRoutePerf(PerfStats):
    """:class:`PerfStats` of one (version, route)."""

    version: str = ""  # "" when nothing versioned answered (a rule or default)
    route: str = ""

    @classmethod
    def of_key(cls, version: str, route: str, c: PerfCell, seconds: float) -> VersionRoutePerf:
        return cls(version=version, route=route, **cls._values(c, seconds))

    def to_dict(self) -> dict[str, Any]:
        # version and route lead, as in the report's JSON since its first release
        d = asdict(self)
        return {"version": d.pop("version"), "route": d.pop("route"), **d}


@dataclass
class TimelinePoint(PerfStats):
    """:class:`PerfStats` of one bucket starting at ``t`` (epoch seconds)."""

    t: float = 0.0

    @classmethod
    def of_bucket(cls, t: float, c: PerfCell, seconds: float) -> TimelinePoint:
        return cls(t=t, **cls._values(c, seconds))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"t": d.pop("t"), **d}


@dataclass
class VersionAccuracy:
    version: str  # "" for unversioned answers
    labelled: int
    accuracy: float | None
    auc: float | None


@dataclass
class AccuracySummary:
    """Accuracy and AUC of the requests whose feedback label arrived."""

    labelled: int
    scored: int
    accuracy: float | None
    auc: float | None
    by_version: list[VersionAccuracy] = field(default_factory=list)


@dataclass
class DriftThresholds:
    """The drift settings the report was judged with."""

    psi: float
    wasserstein: float
    js: float
    min_samples: int
    p_value: float


@dataclass
class MonitorReport:
    """Everything about one model over [start, end).

    ``source`` is where it came from once the monitor actor has said so (``windows`` or
    ``prediction_log``); ``html_path`` where the SDK wrote its HTML form.
    """

    model: str
    tenant: str | None
    start: float
    end: float
    generated_at: float
    bucket_s: float
    traffic: PerfStats | None
    by_version_route: list[VersionRoutePerf]
    timeline: list[TimelinePoint]
    drift: dict[str, Any] | None
    accuracy: AccuracySummary | None
    fairness: dict[str, Any] | None
    alerts: list[dict[str, Any]]
    canary: dict[str, Any] | None
    thresholds: DriftThresholds
    source: str | None = None
    html_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able wire form (keys in the order of the report's JSON)."""
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("source", "html_path"):
                if v is not None:  # only present once set, as before typed reports
                    d[f.name] = v
            elif f.name in ("by_version_route", "timeline"):
                d[f.name] = [r.to_dict() for r in v]
            elif f.name in ("traffic", "accuracy", "thresholds"):
                d[f.name] = None if v is None else asdict(v)
            else:
                d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MonitorReport:
        """Read a :meth:`to_dict` form back (extra keys are ignored)."""
        acc = d.get("accuracy")
        return cls(
            model=d["model"],
            tenant=d.get("tenant"),
            start=d["start"],
            end=d["end"],
            generated_at=d.get("generated_at", d["end"]),
            bucket_s=d.get("bucket_s", 0.0),
            traffic=PerfStats(**d["traffic"]) if d.get("traffic") else None,
            by_version_route=[VersionRoutePerf(**r) for r in d.get("by_version_route") or []],
            timeline=[TimelinePoint(**r) for r in d.get("timeline") or []],
            drift=d.get("drift"),
            accuracy=(
                AccuracySummary(
                    **{
                        **acc,
                        "by_version": [VersionAccuracy(**r) for r in acc.get("by_version", [])],
                    }
                )
                if acc
                else None
            ),
            fairness=d.get("fairness"),
            alerts=list(d.get("alerts") or []),
            canary=d.get("canary"),
            thresholds=DriftThresholds(**d["thresholds"]),
            source=d.get("source"),
            html_path=d.get("html_path"),
        )
