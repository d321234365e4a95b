"""Materialize job: ``python -m jobs.materialize --config configs/jobs/materialize.yaml``.

Loads what changed in the offline Delta tables since the last run into the online store
(incremental; ``full: true`` re-reads everything).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobs._common import job_parser, job_platform, run
from raymlp.config import MaterializeJobConfig, load_config_file


def main(argv: Sequence[str] | None = None) -> int:
    ap = job_parser("materialize", "load offline changes into the online store")
    ap.add_argument("--config", default=None, help="materialize job YAML (MaterializeJobConfig)")
    args = ap.parse_args(argv)
    cfg = load_config_file(MaterializeJobConfig, args.config) if args.config \
        else MaterializeJobConfig()
    p = job_platform(args)
    views: list[str | None] = [*cfg.views] if cfg.views else [None]
    for view in views:
        for m in p.features.materialize(view, cfg.start, cfg.end, full=cfg.full):
            print(f"materialized {m['view']}: {m['rows_upserted']} rows "
                  f"(versions {m['from_version']} -> {m['to_version']})", flush=True)
    print("materialize: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
