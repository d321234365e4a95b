"""``raymlp runs ...``: experiment tracking from the command line.

raymlp runs list                                   # experiments
raymlp runs list churn-tuning --order-by "metrics.val_auc DESC" --filter "status = 'FINISHED'"
raymlp runs show 3f9a1c2b7d0e4a51
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from raymlp._private.cluster import format_table
from raymlp.cli._common import add_group, platform, print_json


def _ts(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _list(args: argparse.Namespace) -> int:
    reg = platform(args).registry
    if args.experiment is None:
        exps = reg.list_experiments()
        if args.json:
            print_json(exps)
        elif not exps:
            print("(no experiments)")
        else:
            print(
                format_table(
                    [
                        {
                            "experiment": e["name"],
                            "runs": e["num_runs"],
                            "created": _ts(e["created_at"]),
                            "by": e["created_by"],
                        }
                        for e in exps
                    ]
                )
            )
        return 0
    runs = reg.search_runs(
        args.experiment, order_by=args.order_by, filter=args.filter, max_results=args.max
    )
    if args.json:
        print_json(runs)
        return 0
    if not runs:
        print("(no runs)")
        return 0
    metric_keys = sorted({k for r in runs for k in r["metrics"]})[:6]
    param_keys = sorted({k for r in runs for k in r["params"]})[:4]
    rows = []
    for r in runs:
        row = {
            "run_id": r["run_id"],
            "name": r["name"][:28],
            "status": r["status"],
            "started": _ts(r["start_time"]),
        }
        row.update({f"params.{k}": _fmt(r["params"].get(k, "-")) for k in param_keys})
        row.update({f"metrics.{k}": _fmt(r["metrics"].get(k, "-")) for k in metric_keys})
        rows.append(row)
    print(format_table(rows))
    return 0


def _show(args: argparse.Namespace) -> int:
    run = platform(args).registry.get_run(args.run_id)
    if args.json:
        print_json(run)
        return 0
    print(f"run {run['run_id']}  {run['name']}")
    print(f"  experiment: {run['experiment']}   status: {run['status']}   by: {run['created_by']}")
    print(f"  started: {_ts(run['start_time'])}   ended: {_ts(run['end_time'])}")
    if run["git_commit"]:
        print(f"  git commit: {run['git_commit']}")
    if run["parent_run_id"]:
        print(f"  parent run: {run['parent_run_id']}")
    if run["children"]:
        print(f"  child runs: {', '.join(run['children'])}")
    for title, data in (("params", run["params"]), ("tags", run["tags"])):
        if data:
            print(f"  {title}:")
            for k, v in sorted(data.items()):
                print(f"    {k} = {_fmt(v)}")
    if run["metrics"]:
        print("  metrics (latest, steps logged):")
        for k, v in sorted(run["metrics"].items()):
            print(f"    {k} = {_fmt(v)}  ({len(run['history'].get(k, []))} values)")
    for a in run["artifacts"]:
        print(f"  artifact: {a['path']}  ({a['uri']})")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    _, cmds = add_group(sub, "runs", "experiment tracking: runs, params, metrics")
    p = cmds.add_parser("list", parents=[common], help="experiments, or the runs of one")
    p.add_argument("experiment", nargs="?", help="experiment name (omit: list experiments)")
    p.add_argument(
        "--order-by", default=None, help="e.g. 'metrics.val_auc DESC' (default: newest first)"
    )
    p.add_argument(
        "--filter", default=None, help="e.g. \"metrics.val_auc > 0.8 and status = 'FINISHED'\""
    )
    p.add_argument("--max", type=int, default=100, help="at most this many runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_list)
    p = cmds.add_parser("show", parents=[common], help="one run in full")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_show)
