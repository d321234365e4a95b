"""Helpers shared by the CLI command modules — and the argparse pieces and runners that the
``jobs/`` entrypoints share with them (the one CLI module jobs may import)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from raymlp.client import Platform, connect
from raymlp.errors import ConfigError

__all__ = [
    "add_group",
    "platform",
    "print_json",
    "add_connect_arguments",
    "connect_from_args",
    "parse_overrides",
    "add_train_arguments",
    "run_train",
    "add_deploy_arguments",
    "run_deploy",
    "print_routes",
]


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


# -- commands whose --config is their own YAML (train, serve) ---------------------------------


def add_connect_arguments(ap: argparse.ArgumentParser) -> None:
    """``--platform-config``, ``--address``, ``--api-key``: for commands whose ``--config`` is
    their own YAML (training, serve), not platform.yaml."""
    ap.add_argument(
        "--platform-config",
        default=None,
        metavar="PLATFORM_YAML",
        help="platform.yaml (default: $RAYMLP_CONFIG, else configs/platform.yaml)",
    )
    ap.add_argument(
        "--address",
        default=None,
        help="Ray address (default: join a running cluster, else start one)",
    )
    ap.add_argument("--api-key", default=None, help="API key to act with ($RAYMLP_API_KEY)")


def connect_from_args(args: argparse.Namespace) -> Platform:
    """Connect with :func:`add_connect_arguments`' flags: no ``--address`` joins the running
    platform (starting a local one if none); an explicit address must have one."""
    return connect(
        args.address,
        config=args.platform_config,
        api_key=args.api_key,
        start="persistent" if args.address is None else "never",
    )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` → ``{"a.b": 1, "c": [1, 2]}`` (values are YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE", field="--set", value=item)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not YAML: {e}", field=key) from None
    return out


def add_train_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments of ``raymlp train`` / ``python -m jobs.train``."""
    ap.add_argument(
        "--config",
        required=True,
        metavar="TRAIN_YAML",
        help="training config, e.g. configs/train/churn.yaml",
    )
    add_connect_arguments(ap)
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (value parsed as YAML), e.g. "
        "--set tune.num_samples=2 --set scaling.num_workers=1",
    )
    ap.add_argument("--json", action="store_true", help="print the result as JSON")


def run_train(args: argparse.Namespace) -> int:
    """Load and validate the config (before touching the cluster), connect, run the job."""
    from raymlp.training.pipeline import load_job_config, run_training_job

    cfg = load_job_config(args.config, parse_overrides(args.overrides))
    result = run_training_job(connect_from_args(args), cfg)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.summary())
    return 0


def add_deploy_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments of ``raymlp serve deploy`` / ``python -m jobs.deploy``."""
    ap.add_argument(
        "--config",
        required=True,
        metavar="SERVE_YAML",
        help="serve config, e.g. configs/serve/churn.yaml",
    )
    add_connect_arguments(ap)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")


def print_routes(models: dict[str, Any] | None) -> None:
    """The routing table of ``serve status`` / ``serve deploy``: one line per served model."""
    if not models:
        print("(no routing information yet)")
        return
    print(
        f"{'MODEL':28} {'STABLE':>6} {'CANARY':>12} {'SHADOW':>6} {'STANDBY':>7} "
        f"{'FALLBACK':28} READY"
    )
    for name, r in models.items():
        canary, fb = r.get("canary"), r.get("fallback")
        canary_s = f"v{canary['version']}@{canary['weight']:g}%" if canary else "-"
        fb_s = f"{fb['model']}:{fb['version']}" if fb else "-"
        print(
            f"{name:28} {str(r.get('stable_version') or '-'):>6} {canary_s:>12} "
            f"{str(r.get('shadow_version') or '-'):>6} {str(r.get('standby_version') or '-'):>7} "
            f"{fb_s:28} {r.get('ready')}"
        )
        for problem in r.get("problems") or []:
            print(f"  ! {problem}")


def run_deploy(args: argparse.Namespace) -> int:
    """Validate the serve config (before touching the cluster), connect, deploy, report."""
    # The deploy itself is raymlp.serving.deploy, reached through the SDK (p.serve.deploy).
    from raymlp.serving.deploy import load_app_config

    cfg = load_app_config(args.config)
    p = connect_from_args(args)
    url = p.serve.deploy(cfg)
    status = p.serve.status(cfg.name)
    if args.json:
        print_json({"url": url, **status})
        return 0
    print(f"application {cfg.name!r} is {status['status']} at {url}")
    print_routes(status.get("models"))
    print(f"API docs: {url}/docs   OpenAPI: {url}/openapi.json")
    return 0
