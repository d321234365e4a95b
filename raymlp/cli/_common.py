"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from raymlp.client import Platform, connect


def add_group(sub: Any, name: str, help: str) -> tuple[argparse.ArgumentParser, Any]:
    """A command group (``raymlp features ...``) whose bare form prints its help."""
    group = sub.add_parser(name, help=help, description=help)
    group.set_defaults(group_parser=group)
    return group, group.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


def platform(args: argparse.Namespace, **kwargs: Any) -> Platform:
    """Connect as the CLI does: join the running platform (start a local one if none)."""
    kwargs.setdefault("start", "persistent")
    return connect(args.address, config=args.config, api_key=args.api_key, **kwargs)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
