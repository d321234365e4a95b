"""Ingest job: ``python -m jobs.ingest --config configs/jobs/ingest_churn.yaml``.

Applies the feature definitions, ingests each source as one Delta commit (a Ray Data pipeline that
validates against the view's schema) and materializes the online views. Under
``ray job submit --working-dir . -- python -m jobs.ingest --config ...`` it joins that cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobs._common import job_parser, job_platform, run
from raymlp.config import IngestJobConfig, load_config_file


def main(argv: Sequence[str] | None = None) -> int:
    ap = job_parser("ingest", "apply feature definitions, ingest sources, materialize")
    ap.add_argument("--config", required=True, help="ingest job YAML (IngestJobConfig)")
    args = ap.parse_args(argv)
    cfg = load_config_file(IngestJobConfig, args.config)
    p = job_platform(args)
    if cfg.features:
        for change in p.features.apply(cfg.features):
            print(f"apply {change['kind']} {change['name']}: {change['action']}", flush=True)
    for src in cfg.sources:
        version = p.features.ingest(src.view, src.path)
        print(f"ingested {src.path} into {src.view}: table version {version}", flush=True)
    if cfg.materialize:
        for m in p.features.materialize():
            print(f"materialized {m['view']}: {m['rows_upserted']} rows "
                  f"(versions {m['from_version']} -> {m['to_version']})", flush=True)
    print("ingest: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
