"""The ``raymlp`` command line.

Each command group lives in its own module (``_cluster``, ``_features``, ``_models``...) with a
``register(subparsers, common)`` function; this module wires them together and owns the exit
codes: 0 ok, 1 user error (one line on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from raymlp import _constants
from raymlp._version import __version__
from raymlp.errors import RayMLPError

__all__ = ["main", "build_parser"]

# Group modules, in help order.
_GROUP_MODULES = (
    "_cluster",
    "_features",
    "_models",
    "_runs",
    "_train",
    "_serve",
    "_monitor",
    "_demo",
)


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=None,
        help="Ray address: auto (default: join a running cluster, else start one), local, "
        "host:port or ray://host:port",
    )
    common.add_argument(
        "--config",
        default=None,
        help="platform.yaml (default: $RAYMLP_CONFIG, else configs/platform.yaml if present)",
    )
    common.add_argument("--api-key", default=None, help="API key to act with ($RAYMLP_API_KEY)")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raymlp",
        description="raymlp: the ML platform on a Ray cluster (features, training, registry, "
        "serving, monitoring).",
    )
    parser.add_argument("--version", action="version", version=f"raymlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common_parser()
    for mod_name in _GROUP_MODULES:
        importlib.import_module(f"raymlp.cli.{mod_name}").register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        # A group without a subcommand, or no command at all: show the relevant help.
        (getattr(args, "group_parser", None) or parser).print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except RayMLPError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if _constants.debug():
            raise
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
