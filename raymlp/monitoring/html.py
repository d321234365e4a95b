"""A standalone HTML page for a monitoring report, with inline SVG plots (no JS, no
matplotlib): latency and throughput over time, error rate over time, and drift per feature::

    Path("report.html").write_text(render_html(core.monitor_report("customer-churn", t0, t1)))

It renders a :class:`~raymlp.monitoring.report_model.MonitorReport` (or its wire dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from raymlp.monitoring.report import as_report, fmt_ts
from raymlp.monitoring.report_model import MonitorReport

__all__ = ["render_html", "line_chart", "bar_chart"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{padding:3px 9px;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.drift{color:#c00;font-weight:600}.muted{color:#777}.firing{color:#c00}
.kpi{display:inline-block;margin-right:26px}.kpi b{font-size:20px;display:block}
svg text{font-size:11px;fill:#444}
"""


def _nice(v: float | None, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def line_chart(
    series: dict[str, Sequence[tuple[float, float | None]]],
    title: str,
    y_unit: str = "",
    width: int = 720,
    height: int = 220,
) -> str:
    """An SVG line chart of ``{name: [(x, y), ...]}`` (x: epoch seconds; y None = gap)."""
    pts = [(x, y) for s in series.values() for x, y in s if y is not None]
    if not pts:
        return f'<p class="muted">{escape(title)}: no data</p>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(p[1] for p in pts) or 1.0
    y1 *= 1.1
    ml, mr, mt, mb = 56, 12, 22, 30
    w, h = width - ml - mr, height - mt - mb

    def sx(x: float) -> float:
        return ml + (0.5 * w if x1 == x0 else (x - x0) / (x1 - x0) * w)

    def sy(y: float) -> float:
        return mt + h - y / y1 * h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="{ml}" y="14" style="font-weight:600">{escape(title)}</text>',
        f'<line x1="{ml}" y1="{mt + h}" x2="{ml + w}" y2="{mt + h}" stroke="#999"/>',
        f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + h}" stroke="#999"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        yv = y1 * frac
        parts.append(
            f'<text x="{ml - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end">'
            f"{yv:.3g}{escape(y_unit)}</text>"
        )
    for xv, anchor in ((x0, "start"), (x1, "end")):
        parts.append(
            f'<text x="{sx(xv):.1f}" y="{mt + h + 16}" text-anchor="{anchor}">'
            f"{escape(fmt_ts(xv)[11:16])}</text>"
        )
    for i, (name, s) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        segs: list[list[str]] = [[]]
        for x, y in s:
            if y is None:
                segs.append([])
            else:
                segs[-1].append(f"{sx(x):.1f},{sy(y):.1f}")
        for seg in segs:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
            elif seg:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.8" '
                    f'points="{" ".join(seg)}"/>'
                )
        parts.append(
            f'<text x="{ml + w - 120 + 0}" y="{mt + 12 + 14 * i}" fill="{color}" '
            f'style="fill:{color}">&#9644; {escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float | None],
    title: str,
    threshold: float | None = None,
    highlight: Sequence[bool] | None = None,
    width: int = 720,
) -> str:
    """A horizontal SVG bar chart (one bar per label), with an optional threshold line."""
    rows = [
        (lab, v, bool(highlight[i]) if highlight else False)
        for i, (lab, v) in enumerate(zip(labels, values))
        if v is not None
    ]
    if not rows:
        return f'<p class="muted">{escape(title)}: no data</p>'
    bar_h, gap, ml, mr, mt = 16, 6, 170, 60, 24
    height = mt + len(rows) * (bar_h + gap) + 10
    vmax = max([v for _, v, _ in rows] + [threshold or 0.0]) or 1.0
    w = width - ml - mr
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="{ml}" y="14" style="font-weight:600">{escape(title)}</text>',
    ]
    for i, (lab, v, hi) in enumerate(rows):
        y = mt + i * (bar_h + gap)
        bw = max(v / vmax * w, 1.0)
        color = "#d62728" if hi else "#1f77b4"
        parts.append(f'<text x="{ml - 6}" y="{y + 12}" text-anchor="end">{escape(lab[:26])}</text>')
        parts.append(f'<rect x="{ml}" y="{y}" width="{bw:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{ml + bw + 4:.1f}" y="{y + 12}">{v:.3g}</text>')
    if threshold is not None:
        tx = ml + threshold / vmax * w
        parts.append(
            f'<line x1="{tx:.1f}" y1="{mt - 4}" x2="{tx:.1f}" y2="{height - 6}" '
            f'stroke="#c00" stroke-dasharray="4,3"/>'
        )
        parts.append(
            f'<text x="{tx + 3:.1f}" y="{mt - 6}" style="fill:#c00">threshold {threshold:g}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] | None = None
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_html(report: MonitorReport | Mapping[str, Any]) -> str:
    """The whole report as one self-contained HTML document."""
    rep = as_report(report)
    title = f"raymlp monitoring report: {rep.model}"
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='muted'>{escape(fmt_ts(rep.start))} .. {escape(fmt_ts(rep.end))}"
        f" &middot; generated {escape(fmt_ts(rep.generated_at))}</p>",
    ]
    t = rep.traffic
    out.append("<h2>Traffic and latency</h2>")
    if not t:
        out.append("<p class='muted'>No requests in this range.</p>")
    else:
        kpis = [
            ("requests", t.requests),
            ("error rate", _nice(t.error_rate, ".2%")),
            ("req/s", _nice(t.rps, ".2f")),
            ("p50", _nice(t.p50_ms, ".1f") + " ms"),
            ("p99", _nice(t.p99_ms, ".1f") + " ms"),
        ]
        out.append(
            "".join(f"<span class='kpi'><b>{escape(str(v))}</b>{escape(k)}</span>" for k, v in kpis)
        )
        tl = rep.timeline
        out.append(
            line_chart(
                {
                    "p50": [(r.t, r.p50_ms) for r in tl],
                    "p99": [(r.t, r.p99_ms) for r in tl],
                },
                "Latency per bucket",
                " ms",
            )
        )
        out.append(
            line_chart(
                {
                    "requests": [(r.t, float(r.requests)) for r in tl],
                    "errors": [(r.t, float(r.errors)) for r in tl],
                },
                "Requests and errors per bucket",
            )
        )
        out.append(
            _table(
                ["version", "route", "requests", "error rate", "p50 ms", "p99 ms"],
                [
                    [
                        vr.version or "-",
                        vr.route,
                        vr.requests,
                        _nice(vr.error_rate, ".2%"),
                        _nice(vr.p50_ms, ".1f"),
                        _nice(vr.p99_ms, ".1f"),
                    ]
                    for vr in rep.by_version_route
                ],
            )
        )
    d = rep.drift
    out.append("<h2>Drift and data quality</h2>")
    if d is None or not d["profile"]:
        out.append("<p class='muted'>No reference profile for the served version.</p>")
    else:
        th = rep.thresholds
        feats = d["features"]
        out.append(
            f"<p>Against the training profile of version {d['version']}. A feature "
            f"drifts when PSI &ge; {th.psi:g}, Wasserstein/std &ge; "
            f"{th.wasserstein:g} or JS &ge; {th.js:g} (with n &ge; "
            f"{th.min_samples}); p-values are context.</p>"
        )
        out.append(
            bar_chart(
                [r["feature"] for r in feats],
                [r["psi"] for r in feats],
                "PSI per feature",
                th.psi,
                [r["drifted"] for r in feats],
            )
        )
        num = [r for r in feats if r["kind"] == "numeric"]
        out.append(
            bar_chart(
                [r["feature"] for r in num],
                [r["wasserstein"] for r in num],
                "Wasserstein distance / reference std",
                th.wasserstein,
                [r["drifted"] for r in num],
            )
        )
        rows = [
            [
                r["feature"],
                r["kind"],
                r["n"],
                _nice(r["psi"]),
                _nice(r["ks"]),
                _nice(r["ks_p"], ".2g"),
                _nice(r["wasserstein"]),
                _nice(r["js"]),
                _nice(r["chi2_p"], ".2g"),
                _nice(r["missing_ratio"], ".1%"),
                _nice(r["out_of_range_ratio"], ".1%"),
                "drift" if r["drifted"] else "",
            ]
            for r in feats
        ]
        out.append(
            _table(
                [
                    "feature",
                    "kind",
                    "n",
                    "PSI",
                    "KS",
                    "KS p",
                    "Wasserstein",
                    "JS",
                    "chi2 p",
                    "missing",
                    "out of range",
                    "verdict",
                ],
                rows,
                ["drift" if r["drifted"] else "" for r in feats],
            )
        )
        if d["prediction"]:
            p = d["prediction"]
            out.append(
                f"<p>Prediction drift: PSI {_nice(p['psi'])}, KS {_nice(p['ks'])} "
                f"({'drift' if p['drifted'] else 'stable'}).</p>"
            )
        out.append(
            f"<p>Schema violations: {d['violation_records']} of {d['records']} requests.</p>"
        )
        if d["violations"]:
            out.append(
                _table(
                    ["feature", "kind", "count"],
                    [[v["feature"], v["kind"], v["count"]] for v in d["violations"]],
                )
            )
    a = rep.accuracy
    out.append("<h2>Accuracy from feedback</h2>")
    if not a:
        out.append("<p class='muted'>No labels in this range.</p>")
    else:
        out.append(
            _table(
                ["version", "labelled", "accuracy", "AUC"],
                [["all", a.labelled, _nice(a.accuracy), _nice(a.auc)]]
                + [
                    [va.version or "-", va.labelled, _nice(va.accuracy), _nice(va.auc)]
                    for va in a.by_version
                ],
            )
        )
    fair = rep.fairness or {}
    if fair.get("attribute"):
        out.append(f"<h2>Fairness by {escape(fair['attribute'])}</h2>")
        out.append(
            f"<p>Disparate impact {_nice(fair['disparate_impact'])} (&lt; 0.8 fails the "
            f"80% rule), accuracy gap {_nice(fair['accuracy_gap'])}, TPR gap "
            f"{_nice(fair['tpr_gap'])}.</p>"
        )
        out.append(
            _table(
                ["slice", "requests", "positive rate", "labelled", "accuracy", "TPR", "FPR"],
                [
                    [
                        s["slice"],
                        s["requests"],
                        _nice(s["positive_rate"], ".1%"),
                        s["labelled"],
                        _nice(s["accuracy"]),
                        _nice(s["tpr"]),
                        _nice(s["fpr"]),
                    ]
                    for s in fair["slices"]
                ],
            )
        )
    c = rep.canary
    if c:
        out.append("<h2>Canary</h2>")
        out.append(
            f"<p>Version {c['version']} vs stable {c['stable_version']}: "
            f"<b>{escape(c['status'])}</b>, weight {c['weight']:g}%.</p>"
        )
        out.append(
            _table(
                ["time", "decision", "weight", "reasons"],
                [
                    [fmt_ts(h["ts"]), h["decision"], f"{h['weight']:g}%", "; ".join(h["reasons"])]
                    for h in c.get("history", [])
                ],
            )
        )
    out.append("<h2>Alerts</h2>")
    alerts = rep.alerts
    if not alerts:
        out.append("<p class='muted'>No alerts.</p>")
    else:
        out.append(
            _table(
                ["state", "severity", "alert", "since"],
                [
                    [al["state"], al["severity"], al["summary"], fmt_ts(al["started_at"])]
                    for al in alerts
                ],
                ["firing" if al["state"] == "firing" else "" for al in alerts],
            )
        )
    out.append("</body></html>")
    return "\n".join(out)
