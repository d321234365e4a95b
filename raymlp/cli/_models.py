"""``raymlp models ...``: the model registry from the command line.

raymlp models list
raymlp models show churn
raymlp models versions churn
raymlp models promote churn 3 [--alias production] [--expect 2] [--reason "..."]
raymlp models approve pr-4 [--comment "..."]      raymlp models reject pr-4 --reason "..."
raymlp models alias churn canary 3                raymlp models alias churn canary --delete
raymlp models stage churn 3 staging
raymlp models rollback churn [--alias production]
raymlp models lineage churn 3
raymlp models events [--after 0] [--kind alias_moved]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from raymlp._private.cluster import format_table
from raymlp.cli._common import add_group, platform, print_json
from raymlp.errors import ValidationError


def _ts(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _versions_table(versions: list[dict[str, Any]]) -> str:
    return format_table(
        [
            {
                "version": v["version"],
                "stage": v["stage"],
                "aliases": ",".join(v["aliases"]) or "-",
                "run": v.get("run_id") or "-",
                "created": _ts(v["created_at"]),
                "by": v["created_by"],
            }
            for v in versions
        ]
    )


def _list(args: argparse.Namespace) -> int:
    models = platform(args).registry.list_models()
    if args.json:
        print_json(models)
        return 0
    if not models:
        print("(no models)")
        return 0
    print(
        format_table(
            [
                {
                    "name": m["name"],
                    "latest": m["latest_version"],
                    "versions": m["num_versions"],
                    "aliases": ", ".join(f"{a}={v}" for a, v in m["aliases"].items()) or "-",
                    "tenant": m["tenant"],
                    "approval": "required" if m["approval_required"] else "-",
                }
                for m in models
            ]
        )
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    m = platform(args).registry.show(args.name)
    if args.json:
        print_json(m)
        return 0
    print(
        f"model {m['name']}  (tenant {m['tenant']}, created {_ts(m['created_at'])} by "
        f"{m['created_by']})"
    )
    if m["description"]:
        print(m["description"])
    print(f"promotion to production: {'needs approval' if m['approval_required'] else 'direct'}")
    aliases = ", ".join(f"{a} -> {v}" for a, v in m["aliases"].items()) or "(none)"
    print(f"aliases: {aliases}")
    for alias, hist in m["alias_history"].items():
        if hist:
            print(f"  {alias} earlier: {' -> '.join(map(str, hist))} (rollback target: {hist[-1]})")
    print("\nversions:")
    print(_versions_table(m["versions"]))
    print("\npromotion requests:")
    if not m["requests"]:
        print("(none)")
    else:
        print(
            format_table(
                [
                    {
                        "id": r["id"],
                        "version": r["version"],
                        "alias": r["alias"],
                        "status": r["status"],
                        "requested_by": r["requested_by"],
                        "reason": r["reason"] or "-",
                        "decided_by": r["decided_by"] or "-",
                        "comment": r["comment"] or "-",
                        "created": _ts(r["created_at"]),
                    }
                    for r in m["requests"]
                ]
            )
        )
    return 0


def _versions(args: argparse.Namespace) -> int:
    versions = platform(args).registry.versions(args.name)
    if args.json:
        print_json([v.to_dict() for v in versions])
        return 0
    print(_versions_table([v.to_dict() for v in versions]))
    return 0


def _promote(args: argparse.Namespace) -> int:
    reg = platform(args).registry
    if reg.requires_approval(args.name, args.alias):
        rid = reg.request_promotion(
            args.name, args.version, alias=args.alias, reason=args.reason or ""
        )
        print(f"moving {args.alias!r} of {args.name} needs an approval: created request {rid}")
        print(f"an approver runs: raymlp models approve {rid}")
        return 0
    kwargs: dict[str, Any] = {}
    if args.expect is not None:
        kwargs["expected_version"] = None if args.expect == "none" else int(args.expect)
    res = reg.promote(args.name, args.version, alias=args.alias, **kwargs)
    print(
        f"{res['name']}: {res['alias']} -> version {res['version']} "
        f"(was {res['previous'] if res['previous'] is not None else 'unset'})"
    )
    return 0


def _approve(args: argparse.Namespace) -> int:
    res = platform(args).registry.approve(args.request_id, comment=args.comment or "")
    print(
        f"approved {args.request_id}: {res['name']} {res['alias']} -> version {res['version']} "
        f"(was {res['previous'] if res['previous'] is not None else 'unset'})"
    )
    return 0


def _reject(args: argparse.Namespace) -> int:
    platform(args).registry.reject(args.request_id, reason=args.reason)
    print(f"rejected {args.request_id}: {args.reason}")
    return 0


def _alias(args: argparse.Namespace) -> int:
    reg = platform(args).registry
    if args.delete:
        res = reg.delete_alias(args.name, args.alias)
        print(f"{args.name}: removed alias {args.alias} (was version {res['previous']})")
        return 0
    if args.version is None:
        raise ValidationError("give a VERSION, or --delete", field="version")
    res = reg.set_alias(args.name, args.alias, args.version)
    print(f"{res['name']}: {res['alias']} -> version {res['version']}")
    return 0


def _stage(args: argparse.Namespace) -> int:
    res = platform(args).registry.set_stage(args.name, args.version, args.stage)
    print(f"{res['name']} version {res.get('version')}: stage {res.get('stage', args.stage)}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    res = platform(args).registry.rollback(args.name, alias=args.alias)
    print(
        f"{res['name']}: {res['alias']} rolled back to version {res['version']} "
        f"(from {res['previous']})"
    )
    return 0


def _lineage(args: argparse.Namespace) -> int:
    lin = platform(args).registry.lineage(args.name, args.version)
    if args.json:
        print_json(lin)
        return 0
    print(f"{lin['model']} v{lin['version']}  ({lin['artifact_uri']})")
    run = lin["run"]
    if run:
        print(f"  trained by run {run['run_id']} ({run['experiment']}, {run['status']})")
    for fv in lin["feature_views"]:
        at = f" @ table version {fv['version']}" if fv.get("version") is not None else ""
        print(f"  features: {fv['name']}{at}")
    if lin["dataset_rows"] is not None:
        print(f"  dataset rows: {lin['dataset_rows']}")
    if lin["dataset_uri"]:
        print(f"  dataset: {lin['dataset_uri']}")
    if lin["code_commit"]:
        print(f"  code commit: {lin['code_commit']}")
    chain = [f"{lin['model']} v{lin['version']}"] + [
        f"{p['name']} v{p['version']}" for p in lin["parents"]
    ]
    if len(chain) > 1:
        print(f"  derived from: {' <- '.join(chain)}")
    fb = lin["fallback"]
    if fb:
        target = f"v{fb['version']}" if fb.get("version") else f"@{fb['alias']}"
        print(f"  fallback: {fb['name']} {target}")
    for c in lin["children"]:
        print(f"  fine-tuned into: {c['name']} v{c['version']}")
    for c in lin["fallback_for"]:
        print(f"  fallback for: {c['name']} v{c['version']}")
    return 0


def _events(args: argparse.Namespace) -> int:
    events = platform(args).registry.events(
        after_seq=args.after, kinds=args.kind or None, limit=args.limit
    )
    if args.json:
        print_json(events)
        return 0
    print(
        format_table(
            [
                {
                    "seq": e["seq"],
                    "time": _ts(e["ts"]),
                    "principal": e["principal"],
                    "kind": e["kind"],
                    "entity": e["entity"],
                    "change": (
                        f"{e['payload'].get('before')} -> {e['payload'].get('after')}"
                        if "after" in e["payload"]
                        else "-"
                    ),
                }
                for e in events
            ]
        )
        if events
        else "(no events)"
    )
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    _, cmds = add_group(sub, "models", "model registry: versions, stages, aliases, approvals")

    def cmd(name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = cmd("list", _list, "registered models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = cmd("show", _show, "a model: versions, aliases, promotion requests")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = cmd("versions", _versions, "versions of a model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = cmd(
        "promote",
        _promote,
        "move an alias (default production) to a version; creates an approval request "
        "when the alias needs one",
    )
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--alias", default="production", help="alias to move (default production)")
    p.add_argument(
        "--expect", default=None, help="only if the alias is held by this version ('none': unset)"
    )
    p.add_argument("--reason", default=None, help="why (kept in the request)")
    p = cmd("approve", _approve, "approve a promotion request (role approver; not your own)")
    p.add_argument("request_id")
    p.add_argument("--comment", default=None)
    p = cmd("reject", _reject, "reject a promotion request")
    p.add_argument("request_id")
    p.add_argument("--reason", required=True)
    p = cmd("alias", _alias, "point an alias at a version (or --delete it)")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", type=int, nargs="?")
    p.add_argument("--delete", action="store_true", help="remove the alias")
    p = cmd("stage", _stage, "set a version's stage (none, staging, production, archived)")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("stage")
    p = cmd("rollback", _rollback, "move an alias back to its previous holder")
    p.add_argument("name")
    p.add_argument("--alias", default="production")
    p = cmd("lineage", _lineage, "where a version comes from and what derives from it")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = cmd("events", _events, "the registry audit log (who did what, when)")
    p.add_argument("--after", type=int, default=0, help="only events with seq above this")
    p.add_argument("--kind", action="append", help="only events of this kind (repeatable)")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="machine-readable output")
