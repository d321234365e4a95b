"""``raymlp demo``: the first ten minutes of raymlp on an embedded local Ray."""

from __future__ import annotations

import argparse
from typing import Any


def _demo(args: argparse.Namespace) -> int:
    from raymlp.demo import run_demo, settings_from_args

    settings = settings_from_args(args.smoke, args.root)
    if args.port:
        settings.http_port = args.port
    return run_demo(settings, address=args.address)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo on an embedded local Ray (data, features, training, "
        "approval, serving, canary, monitoring)",
    )
    demo.add_argument("--address", default=None,
                      help="join this Ray cluster instead of starting an embedded one")
    demo.add_argument("--smoke", action="store_true",
                      help="tiny budget, check the answers, exit 0 (what `make test` runs)")
    demo.add_argument("--root", default=None,
                      help="storage root for the demo (wiped first; default .raymlp/demo)")
    demo.add_argument("--port", type=int, default=None, help="HTTP port (default 8000 if free)")
    demo.set_defaults(handler=_demo)
