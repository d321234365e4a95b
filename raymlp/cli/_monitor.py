"""``raymlp monitor report | alerts | resolve | metrics | canary | apply``.

Examples::

    raymlp monitor report customer-churn --since 6h --html report.html
    raymlp monitor alerts --state firing
    raymlp monitor resolve 3f9a0c1d2e4b5a67
    raymlp monitor metrics customer-churn
    raymlp monitor canary customer-churn
    raymlp monitor apply configs/monitoring/churn.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from raymlp.cli._common import add_group, platform, print_json
from raymlp.monitoring.report import fmt_ts, render_text

__all__ = ["register"]


def _report(args: argparse.Namespace) -> int:
    p = platform(args)
    rep = p.monitor.report(args.model, start=args.since, end=args.until, html_path=args.html)
    if args.json:
        print_json(rep)
        return 0
    print(render_text(rep), end="")
    if args.html:
        print(f"HTML report: {args.html}")
    return 0


def _alerts(args: argparse.Namespace) -> int:
    p = platform(args)
    rows = p.monitor.alerts(None if args.state == "all" else args.state)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no {'' if args.state == 'all' else args.state + ' '}alerts")
        return 0
    for a in rows:
        when = a["resolved_at"] if a["state"] == "resolved" else a["started_at"]
        print(f"{a['id']}  {a['state']:<8} {a['summary']}  ({fmt_ts(when)})")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    t = platform(args).monitor.resolve_alert(args.alert_id)
    print(f"resolved {t['id']}: {t['summary']}")
    return 0


def _metrics(args: argparse.Namespace) -> int:
    p = platform(args)
    values = p.monitor.metrics(args.model)
    if args.json:
        print_json({"url": p.monitor.metrics_url(), "gauges": values})
        return 0
    print(f"Prometheus endpoint: {p.monitor.metrics_url()}")
    for name, rows in sorted(values.items()):
        for r in rows:
            labels = ",".join(f'{k}="{v}"' for k, v in r["labels"].items())
            print(f"{name}{{{labels}}} {r['value']:.6g}")
    return 0


def _canary(args: argparse.Namespace) -> int:
    runs = platform(args).monitor.canary(args.model)
    if args.json:
        print_json(runs)
        return 0
    if not runs:
        print("no canary tracked")
        return 0
    for r in runs:
        print(
            f"{r['model']} v{r['version']} (stable v{r['stable_version']}): {r['status']}, "
            f"weight {r['weight']:g}%, step {r['step'] + 1}, since {fmt_ts(r['started_at'])}"
        )
        for h in r["history"][-10:]:
            print(
                f"  {fmt_ts(h['ts'])}  {h['decision']:<8} -> {h['weight']:g}%  "
                + "; ".join(h["reasons"])
            )
    return 0


def _apply(args: argparse.Namespace) -> int:
    res = platform(args).monitor.apply_config(args.file)
    print(f"applied {args.file}: {res['rules']} rules ({res['resolved']} alerts resolved)")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    _, msub = add_group(sub, "monitor", "monitoring: reports, alerts, metrics, canaries")
    rep = msub.add_parser("report", parents=[common], help="summary (and HTML report) of a model")
    rep.add_argument("model", help="model name")
    rep.add_argument(
        "--since",
        default="1h",
        help="start: a duration ago (1h, 30m, 7d), ISO-8601 or epoch (default 1h)",
    )
    rep.add_argument("--until", default=None, help="end (default: now); same forms as --since")
    rep.add_argument("--html", default=None, metavar="PATH", help="also write an HTML report")
    rep.add_argument("--json", action="store_true", help="machine-readable output")
    rep.set_defaults(handler=_report)

    al = msub.add_parser("alerts", parents=[common], help="list alerts")
    al.add_argument(
        "--state",
        default="firing",
        choices=["firing", "pending", "resolved", "all"],
        help="default: firing",
    )
    al.add_argument("--json", action="store_true", help="machine-readable output")
    al.set_defaults(handler=_alerts)

    rs = msub.add_parser("resolve", parents=[common], help="resolve a firing alert by id")
    rs.add_argument("alert_id")
    rs.set_defaults(handler=_resolve)

    me = msub.add_parser(
        "metrics", parents=[common], help="current gauge values and the Prometheus endpoint"
    )
    me.add_argument("model", nargs="?", default=None, help="only this model")
    me.add_argument("--json", action="store_true", help="machine-readable output")
    me.set_defaults(handler=_metrics)

    ca = msub.add_parser("canary", parents=[common], help="canaries driven by the monitor")
    ca.add_argument("model", nargs="?", default=None)
    ca.add_argument("--json", action="store_true", help="machine-readable output")
    ca.set_defaults(handler=_canary)

    ap = msub.add_parser(
        "apply",
        parents=[common],
        help="replace alert rules / drift / canary policy from a YAML file",
    )
    ap.add_argument("file", help="e.g. configs/monitoring/churn.yaml")
    ap.set_defaults(handler=_apply)
