"""``raymlp up | down | status``: the platform's lifecycle on a Ray cluster."""

from __future__ import annotations

import argparse
from typing import Any

from raymlp._private import cluster
from raymlp.cli._common import print_json
from raymlp.client import connect
from raymlp.config import load_platform_config


def _up(args: argparse.Namespace) -> int:
    p = connect(args.address, config=args.config, api_key=args.api_key, start="persistent")
    rows = p.status()
    print(cluster.format_table(rows))
    print(f"Ray address: {p.cluster.address}")
    print(f"storage root: {p.storage.root}")
    if p.dashboard_url:
        print(f"Ray dashboard: {p.dashboard_url}")
    if p.cluster is not None and p.cluster.started_here:
        print(f"Serve ingress: {p.cluster.ingress} (ray.serve_ingress)")
    return 0


def _down(args: argparse.Namespace) -> int:
    cfg = load_platform_config(args.config)
    try:
        cluster.init_ray(cfg, args.address, start="never")
    except Exception:
        print("no running Ray cluster: nothing to remove")
        return 0
    removed = cluster.remove_platform(cfg.ray.namespace)
    print("removed: " + (", ".join(removed) if removed else "(nothing was running)"))
    if args.stop_cluster:
        if cluster.stop_local_cluster():
            print("stopped the Ray cluster")
        else:
            print("the Ray cluster does not run on this machine: left running")
    return 0


def _status(args: argparse.Namespace) -> int:
    cfg = load_platform_config(args.config)
    info = cluster.init_ray(cfg, args.address, start="never")
    cfg = cluster.published_config() or cfg
    rows = cluster.platform_status(cfg)
    if args.json:
        print_json({"actors": rows, "dashboard_url": info.dashboard_url,
                    "storage_root": cfg.storage.root})
        return 0
    print(cluster.format_table(rows))
    print(f"storage root: {cfg.storage.root}")
    print(f"Ray dashboard: {info.dashboard_url or '(not running)'}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    up = sub.add_parser(
        "up", parents=[common],
        help="join (or start) a Ray cluster and create the platform actors (idempotent)",
    )
    up.set_defaults(handler=_up)
    down = sub.add_parser("down", parents=[common], help="remove the platform actors")
    down.add_argument("--stop-cluster", action="store_true",
                      help="also stop the Ray cluster (only its own processes, on this machine)")
    down.set_defaults(handler=_down)
    status = sub.add_parser("status", parents=[common],
                            help="platform actors (node, state, restarts) and the dashboard URL")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)
