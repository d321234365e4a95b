"""Plumbing shared by every job: the common flags, connecting, and one-line errors.

A job is ``python -m jobs.<name> --config <job yaml>``; under ``ray job submit`` it joins the
cluster through ``RAY_ADDRESS`` (set by Ray) and the platform published by ``raymlp up``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from raymlp import _constants
from raymlp.client import Platform, connect
from raymlp.errors import RayMLPError


def job_parser(prog: str, description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"python -m jobs.{prog}", description=description)
    ap.add_argument("--address", default=None,
                    help="Ray address (default: RAY_ADDRESS under `ray job submit`, else auto)")
    ap.add_argument("--platform-config", default=None,
                    help="platform.yaml (default: the config of the running platform)")
    ap.add_argument("--api-key", default=None, help="API key to act with ($RAYMLP_API_KEY)")
    return ap


def job_platform(args: argparse.Namespace) -> Platform:
    """Join the running platform (an embedded one when run outside a cluster)."""
    return connect(args.address, config=args.platform_config, api_key=args.api_key,
                   start="embedded")


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a job's ``main``; a RayMLPError becomes one line on stderr and exit code 1."""
    try:
        return int(main(argv) or 0)
    except RayMLPError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if _constants.debug():
            raise
        return 1
