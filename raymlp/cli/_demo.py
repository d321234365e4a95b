"""``raymlp demo``: the first ten minutes of raymlp on an embedded local Ray."""

from __future__ import annotations

import argparse
from typing import Any

from raymlp._private import cluster
from raymlp.client import connect


def _demo(args: argparse.Namespace) -> int:
    # The full pipeline (data → features → training → serving → monitoring) lands with the
    # end-to-end issue; until then the demo brings the platform up and shows it.
    print("[1/2] starting raymlp on an embedded local Ray ...", flush=True)
    p = connect(args.address or "local", config=args.config, api_key=args.api_key,
                start="embedded")
    print("[2/2] platform status", flush=True)
    print(cluster.format_table(p.status()))
    print(f"storage root: {p.storage.root}")
    print(f"Ray dashboard: {p.dashboard_url or '(not running)'}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser("demo", parents=[common],
                          help="run the end-to-end demo on an embedded local Ray")
    demo.add_argument("--smoke", action="store_true",
                      help="tiny budget, check the answers, exit 0")
    demo.set_defaults(handler=_demo)
