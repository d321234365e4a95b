"""``raymlp serve deploy|config|canary|shadow|promote|rollback|status``: the serving app.

``--config`` here is the *serve* YAML (``configs/serve/*.yaml``); the platform's is
``--platform-config``. Traffic commands write the registry's traffic state; the gateways apply
it within seconds, without a redeploy::

    raymlp serve deploy --config configs/serve/churn.yaml
    raymlp serve config --config configs/serve/churn.yaml > serve.yaml   # for `serve deploy`
    raymlp serve canary customer-churn --version 4 --weight 10 --steps 10,25,50,100
    raymlp serve shadow customer-churn --version 5        # --off to stop
    raymlp serve promote customer-churn                   # next canary step, or make it stable
    raymlp serve promote customer-churn --version 4       # blue-green switch to version 4
    raymlp serve rollback customer-churn
    raymlp serve status
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from raymlp.cli._common import (
    add_connect_arguments,
    add_deploy_arguments,
    add_group,
    connect_from_args,
    print_json,
    print_routes,
    run_deploy,
)
from raymlp.errors import ConfigError

__all__ = ["register"]


def _config(args: argparse.Namespace) -> int:
    from raymlp.config import load_platform_config
    from raymlp.serving.app import serve_config
    from raymlp.serving.deploy import load_app_config

    cfg = load_app_config(args.config)
    platform_cfg = load_platform_config(args.platform_config)
    text = yaml.safe_dump(serve_config(cfg, platform_cfg.http), sort_keys=False)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.output} (deploy with: serve deploy {args.output})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _steps(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--steps {text!r} is not a comma-separated list of percentages",
            field="--steps",
            value=text,
        ) from None


def _show(args: argparse.Namespace, route: dict[str, Any]) -> int:
    if args.json:
        print_json(route)
    else:
        print_routes({args.model: route} if route else None)
    return 0


def _canary(args: argparse.Namespace) -> int:
    p = connect_from_args(args)
    route = p.serve.canary(
        args.model,
        args.version,
        args.weight,
        steps=_steps(args.steps),
        reason=args.reason,
        app=args.app,
        wait=not args.no_wait,
    )
    return _show(args, route)


def _shadow(args: argparse.Namespace) -> int:
    if args.off == (args.version is not None):
        raise ConfigError("give --version V or --off", field="--version")
    p = connect_from_args(args)
    route = p.serve.shadow(
        args.model,
        None if args.off else args.version,
        reason=args.reason,
        app=args.app,
        wait=not args.no_wait,
    )
    return _show(args, route)


def _promote(args: argparse.Namespace) -> int:
    p = connect_from_args(args)
    if args.version is not None:
        route = p.serve.blue_green(args.model, args.version, app=args.app, wait=not args.no_wait)
    else:
        route = p.serve.promote(args.model, app=args.app, wait=not args.no_wait)
    return _show(args, route)


def _rollback(args: argparse.Namespace) -> int:
    p = connect_from_args(args)
    return _show(args, p.serve.rollback(args.model, app=args.app, wait=not args.no_wait))


def _status(args: argparse.Namespace) -> int:
    p = connect_from_args(args)
    status = p.serve.status(args.app, refresh=args.refresh)
    if args.json:
        print_json(status)
        return 0
    print(f"application {status['app']!r}: {status['status']}  {status.get('url') or ''}")
    for name, d in status["deployments"].items():
        print(f"  {name:16} {d['status']:10} {json.dumps(d['replicas'])}")
    print_routes(status.get("models"))
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    del common  # serve commands take --config for the serve YAML, --platform-config for ours
    _, cmds = add_group(
        sub,
        "serve",
        "the Serve application: deploy, traffic (canary, shadow, blue-green), rollback, status",
    )

    deploy = cmds.add_parser("deploy", help="deploy (or update) the serving application")
    add_deploy_arguments(deploy)
    deploy.set_defaults(handler=run_deploy)

    config = cmds.add_parser("config", help="print a Serve config for `serve deploy`")
    config.add_argument("--config", required=True, metavar="SERVE_YAML", help="serve config")
    config.add_argument(
        "--platform-config",
        default=None,
        metavar="PLATFORM_YAML",
        help="platform.yaml (its http section is the endpoint)",
    )
    config.add_argument("--output", "-o", default=None, help="write to a file (default: stdout)")
    config.set_defaults(handler=_config)

    def traffic_parser(name: str, help: str) -> argparse.ArgumentParser:
        ap = cmds.add_parser(name, help=help)
        ap.add_argument("model", help="served model name")
        ap.add_argument("--app", default=None, help="application name (default: the deployed one)")
        ap.add_argument(
            "--no-wait",
            action="store_true",
            help="return once the registry has the change (gateways apply it soon)",
        )
        ap.add_argument("--json", action="store_true", help="print the route as JSON")
        add_connect_arguments(ap)
        return ap

    canary = traffic_parser("canary", "send a share of entities to a version (sticky)")
    canary.add_argument("--version", type=int, required=True, help="canary version")
    canary.add_argument("--weight", type=float, required=True, help="percent of traffic, 0..100")
    canary.add_argument(
        "--steps",
        default=None,
        help="step plan, e.g. 5,25,50,100 (promote and the monitor follow it)",
    )
    canary.add_argument("--reason", default="", help="recorded in the registry event")
    canary.set_defaults(handler=_canary)

    shadow = traffic_parser("shadow", "copy live traffic to a version (compared, never returned)")
    shadow.add_argument("--version", type=int, default=None, help="shadow version")
    shadow.add_argument("--off", action="store_true", help="stop shadowing")
    shadow.add_argument("--reason", default="", help="recorded in the registry event")
    shadow.set_defaults(handler=_shadow)

    promote = traffic_parser(
        "promote",
        "advance the canary (next step, or make it stable); "
        "with --version: blue-green switch to that version",
    )
    promote.add_argument(
        "--version",
        type=int,
        default=None,
        help="blue-green: warm up this version, then switch the alias to it",
    )
    promote.set_defaults(handler=_promote)

    rollback = traffic_parser("rollback", "canary off, or the alias back to the warm standby")
    rollback.set_defaults(handler=_rollback)

    status = cmds.add_parser("status", help="deployments, versions, traffic split, breakers")
    status.add_argument("--app", default=None, help="application name")
    status.add_argument("--refresh", action="store_true", help="re-read the registry first")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    add_connect_arguments(status)
    status.set_defaults(handler=_status)
