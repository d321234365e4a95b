"""``raymlp features apply|ingest|materialize|get|list|describe``: the feature store CLI.

Examples::

    raymlp features apply configs/features/churn.yaml
    raymlp features ingest customer_profile data/profiles.parquet
    raymlp features materialize customer_profile
    raymlp features get customer_profile:tenure_months --entity customer_id=c1
    raymlp features get customer_profile:tenure_months --historical entities.parquet --out train.parquet
    raymlp features list
    raymlp features describe customer_profile
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from raymlp.cli._common import add_group, platform, print_json
from raymlp.errors import BadRequestError


def _apply(args: argparse.Namespace) -> int:
    changes = platform(args).features.apply(args.file, force=args.force)
    if args.json:
        print_json(changes)
        return 0
    for c in changes:
        detail = f"  ({c['detail']})" if c["detail"] else ""
        print(f"{c['action']:9}  {c['kind']:22}  {c['name']}  v{c['version']}{detail}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    version = platform(args).features.ingest(args.view, args.data)
    print(f"ingested {args.data} into {args.view}: table version {version}")
    return 0


def _materialize(args: argparse.Namespace) -> int:
    results = platform(args).features.materialize(args.view, args.start, args.end, full=args.full)
    if args.json:
        print_json(results)
        return 0
    for r in results:
        print(
            f"{r['view']}: versions {r['from_version']} -> {r['to_version']}, "
            f"{r['files']} new file(s), {r['rows_upserted']} entities updated"
        )
    return 0


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _entity_rows(specs: list[str]) -> list[dict[str, Any]]:
    rows = []
    for spec in specs:
        row = {}
        for part in spec.split(","):
            key, sep, val = part.partition("=")
            if not sep or not key.strip():
                raise BadRequestError(
                    f"--entity {spec!r} is not key=value[,key=value...]",
                    field="--entity",
                    value=spec,
                )
            row[key.strip()] = _value(val.strip())
        rows.append(row)
    return rows


def _get(args: argparse.Namespace) -> int:
    fs = platform(args).features
    if args.historical:
        pins = {}
        for pin in args.as_of or []:
            view, sep, version = pin.partition("=")
            if not sep or not version.isdigit():
                raise BadRequestError(
                    f"--as-of {pin!r} is not view=version", field="--as-of", value=pin
                )
            pins[view] = int(version)
        ds = fs.get_historical_features(args.historical, args.features, as_of_versions=pins)
        versions = fs.versions_of(ds)
        if args.out:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(
                pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow"))), args.out
            )
            print(f"wrote {ds.count()} rows to {args.out} (table versions {versions})")
        else:
            for row in ds.take(args.limit):
                print(json.dumps(row, default=str))
            print(f"# table versions: {json.dumps(versions)}")
        return 0
    if not args.entity:
        raise BadRequestError(
            "give --entity key=value (online) or --historical FILE", field="--entity"
        )
    print_json(fs.get_online_features(_entity_rows(args.entity), args.features))
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = platform(args).features.list_views()
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("(no feature views: run `raymlp features apply FILE`)")
        return 0
    print(f"{'NAME':24} {'KIND':10} {'VERSION':7} {'TTL':6} {'ONLINE':6} {'OWNER':24} FEATURES")
    for r in rows:
        kind = "view" if r["kind"] == "feature_view" else "on-demand"
        print(
            f"{r['name']:24} {kind:10} {r['version']:<7} {str(r['ttl'] or '-'):6} "
            f"{str(r['online']).lower():6} {r['owner'][:24]:24} {', '.join(r['features'])}"
        )
    return 0


def _describe(args: argparse.Namespace) -> int:
    d = platform(args).features.describe(args.view)
    if args.json:
        print_json(d)
        return 0
    defn = d["definition"]
    print(
        f"{d['name']} ({d['kind'].replace('_', ' ')}, definition v{d['version']}, "
        f"tenant {d['tenant']})"
    )
    print(f"  description: {d['description'] or '-'}")
    print(f"  owner:       {d['owner'] or '-'}")
    print(f"  tags:        {json.dumps(d['tags']) if d['tags'] else '-'}")
    if d["kind"] == "feature_view":
        keys = ", ".join(f"{k} ({t})" for k, t in d["join_keys"])
        print(f"  entities:    {', '.join(defn['entities'])}  keys: {keys}")
        print(f"  timestamp:   {defn['timestamp_field']}   ttl: {defn['ttl']}")
    else:
        print(f"  udf:         {defn['udf']}   sources: {', '.join(defn['sources'])}")
    print("  schema:")
    for f in defn["schema"]:
        print(f"    {f['name']:28} {f['dtype']:10} {f.get('description', '')}")
    if "table" in d:
        t = d["table"]
        print(f"  table:       {t['uri']}")
        print(
            f"    version {t['version']}, {t['num_rows']} rows in {t['num_files']} files, "
            f"{t.get('size_bytes', 0)} bytes"
        )
        print(
            f"    events {t.get('first_event_time') or '-'} .. {t.get('last_event_time') or '-'}"
            f" (freshness: last event {t.get('last_event_time') or '-'})"
        )
        o = d["online"]
        print(
            f"  online:      {'on' if o['enabled'] else 'off'}; materialized version "
            f"{o['materialized_version']}; {o['entities']} entities in memory"
        )
    models = d.get("models")
    if models is None:
        print("  used by:     (unknown: the registry is not running)")
    else:
        names = [f"{m.get('name')}:{m.get('version')}" for m in models]
        print(f"  used by:     {', '.join(names) if names else '(no registered model)'}")
    print("  history:")
    for h in d["history"]:
        print(f"    v{h['version']} {h['action']:9} by {h['applied_by']}  {h['detail']}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    _, fsub = add_group(sub, "features", "the feature store: definitions, ingestion, retrieval")
    p = fsub.add_parser("apply", parents=[common], help="apply a feature definition YAML")
    p.add_argument("file", help="YAML with entities / feature_views / on_demand_feature_views")
    p.add_argument(
        "--force",
        action="store_true",
        help="accept incompatible schema changes (the table restarts empty; older "
        "versions stay readable by time travel)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_apply)

    p = fsub.add_parser("ingest", parents=[common], help="append a Parquet/CSV file to a view")
    p.add_argument("view")
    p.add_argument("data", help="Parquet file/directory or CSV file (local path or URI)")
    p.set_defaults(handler=_ingest)

    p = fsub.add_parser(
        "materialize", parents=[common], help="load new rows into the online store (incremental)"
    )
    p.add_argument("view", nargs="?", default=None, help="default: every online view")
    p.add_argument("--start", default=None, help="only rows with event time >= this (ISO-8601)")
    p.add_argument("--end", default=None, help="only rows with event time <= this (ISO-8601)")
    p.add_argument("--full", action="store_true", help="re-read every file, not only new ones")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_materialize)

    p = fsub.add_parser(
        "get", parents=[common], help="online feature values, or a historical (point-in-time) set"
    )
    p.add_argument("features", nargs="+", help="feature references view:feature")
    p.add_argument(
        "--entity",
        action="append",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="an entity row (repeat for several)",
    )
    p.add_argument(
        "--historical",
        metavar="ENTITY_FILE",
        help="Parquet/CSV of entity rows (join keys + event_timestamp)",
    )
    p.add_argument(
        "--as-of",
        action="append",
        metavar="VIEW=VERSION",
        help="read this Delta version of a view (time travel)",
    )
    p.add_argument("--out", help="write the historical result to this Parquet file")
    p.add_argument("--limit", type=int, default=20, help="rows to print (historical)")
    p.set_defaults(handler=_get)

    p = fsub.add_parser("list", parents=[common], help="feature views and on-demand views")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_list)

    p = fsub.add_parser(
        "describe",
        parents=[common],
        help="schema, owner, versions, rows, freshness, models using a view",
    )
    p.add_argument("view")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_describe)
