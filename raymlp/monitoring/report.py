"""The text form of a monitoring report (``raymlp monitor report``).

:func:`render_text` renders a :class:`~raymlp.monitoring.report_model.MonitorReport` (or its
wire dict); :func:`raymlp.monitoring.html.render_html` renders the same as a standalone HTML
page::

    rep = core.monitor_report("customer-churn", start=t0, end=t1)
    print(render_text(rep))
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from raymlp.monitoring.report_model import MonitorReport

__all__ = ["render_text", "fmt_ts", "as_report"]


def as_report(rep: MonitorReport | Mapping[str, Any]) -> MonitorReport:
    """``rep`` itself, or the report its wire dict (:meth:`MonitorReport.to_dict`) holds."""
    return rep if isinstance(rep, MonitorReport) else MonitorReport.from_dict(dict(rep))


def fmt_ts(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _f(v: Any, spec: str = ".3f", unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:{spec}}{unit}"
    return f"{v}{unit}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return out


def render_text(report: MonitorReport | Mapping[str, Any]) -> str:
    """A readable, plain-text summary of a report."""
    rep = as_report(report)
    lines = [f"model {rep.model}  ({fmt_ts(rep.start)} .. {fmt_ts(rep.end)})"]
    t = rep.traffic
    lines.append("")
    lines.append("TRAFFIC")
    if not t:
        lines.append("  no requests in this range")
    else:
        lines.append(
            f"  requests {t.requests}  errors {t.errors} "
            f"({_f(t.error_rate, '.2%')})  rps {_f(t.rps, '.2f')}  "
            f"latency p50 {_f(t.p50_ms, '.1f', ' ms')}  "
            f"p99 {_f(t.p99_ms, '.1f', ' ms')}"
        )
        rows = [
            [
                r.version or "-",
                r.route,
                str(r.requests),
                _f(r.error_rate, ".2%"),
                _f(r.p50_ms, ".1f"),
                _f(r.p99_ms, ".1f"),
            ]
            for r in rep.by_version_route
        ]
        lines += [
            "  " + s
            for s in _table(["version", "route", "requests", "errors", "p50 ms", "p99 ms"], rows)
        ]
    d = rep.drift
    lines.append("")
    if d is None:
        lines.append("DRIFT  no versioned traffic")
    elif not d["profile"]:
        lines.append(f"DRIFT  version {d['version']} has no reference profile")
    else:
        th = rep.thresholds
        lines.append(
            f"DRIFT vs the training profile of version {d['version']}  "
            f"(drift when PSI >= {th.psi:g} or Wasserstein/std >= "
            f"{th.wasserstein:g} or JS >= {th.js:g}; n >= {th.min_samples})"
        )
        rows = [
            [
                r["feature"],
                r["kind"][:3],
                str(r["n"]),
                _f(r["psi"]),
                _f(r["ks"]),
                _f(r["ks_p"], ".2g"),
                _f(r["wasserstein"]),
                _f(r["js"]),
                _f(r["chi2_p"], ".2g"),
                _f(r["missing_ratio"], ".1%"),
                _f(r["out_of_range_ratio"], ".1%"),
                "DRIFT" if r["drifted"] else "",
            ]
            for r in d["features"]
        ]
        p = d["prediction"]
        if p:
            rows.append(
                [
                    "(prediction)",
                    "num",
                    str(p["n"]),
                    _f(p["psi"]),
                    _f(p["ks"]),
                    _f(p["ks_p"], ".2g"),
                    _f(p["wasserstein"]),
                    "-",
                    "-",
                    "-",
                    "-",
                    "DRIFT" if p["drifted"] else "",
                ]
            )
        lines += [
            "  " + s
            for s in _table(
                [
                    "feature",
                    "kind",
                    "n",
                    "psi",
                    "ks",
                    "ks_p",
                    "wass",
                    "js",
                    "chi2_p",
                    "missing",
                    "out-of-range",
                    "",
                ],
                rows,
            )
        ]
        viol = d["violations"]
        lines.append(
            f"  schema violations: {d['violation_records']} of {d['records']} requests"
            + (
                ""
                if not viol
                else "  ("
                + ", ".join(f"{v['feature']}:{v['kind']}={v['count']}" for v in viol[:8])
                + ")"
            )
        )
    a = rep.accuracy
    lines.append("")
    if not a:
        lines.append("ACCURACY  no feedback labels in this range")
    else:
        lines.append(
            f"ACCURACY  labelled {a.labelled}  accuracy {_f(a.accuracy, '.3f')}  "
            f"AUC {_f(a.auc, '.3f')}"
        )
        for va in a.by_version:
            lines.append(
                f"  v{va.version or '-'}: labelled {va.labelled}  accuracy "
                f"{_f(va.accuracy, '.3f')}  AUC {_f(va.auc, '.3f')}"
            )
    fair = rep.fairness
    if fair and fair.get("attribute"):
        lines.append("")
        lines.append(
            f"FAIRNESS by {fair['attribute']}  disparate impact "
            f"{_f(fair['disparate_impact'])}  accuracy gap {_f(fair['accuracy_gap'])}"
        )
        rows = [
            [
                s["slice"],
                str(s["requests"]),
                _f(s["positive_rate"], ".1%"),
                str(s["labelled"]),
                _f(s["accuracy"]),
                _f(s["tpr"]),
                _f(s["fpr"]),
            ]
            for s in fair["slices"]
        ]
        lines += [
            "  " + s
            for s in _table(
                ["slice", "requests", "positive", "labelled", "accuracy", "tpr", "fpr"], rows
            )
        ]
    c = rep.canary
    if c:
        lines.append("")
        lines.append(
            f"CANARY v{c['version']} (stable v{c['stable_version']}): {c['status']}, "
            f"weight {c['weight']:g}%, step {c['step'] + 1}"
        )
        if c.get("last_verdict"):
            lines.append(
                f"  last decision: {c['last_verdict']['decision']} - "
                + "; ".join(c["last_verdict"]["reasons"])
            )
    lines.append("")
    alerts = rep.alerts
    lines.append(f"ALERTS ({sum(a['state'] == 'firing' for a in alerts)} firing)")
    for al in alerts[:20]:
        lines.append(f"  {al['state']:<8} {al['summary']}  since {fmt_ts(al['started_at'])}")
    return "\n".join(lines) + "\n"
