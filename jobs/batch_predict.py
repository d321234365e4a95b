"""Batch prediction job: ``python -m jobs.batch_predict --config configs/jobs/batch_predict_churn.yaml``.

Reads the entity table with Ray Data, joins the model's features (point-in-time, or the latest
values), scores with a pool of predictor actors (a GPU each when asked for and present) and
appends the predictions to the Delta table ``<root>/predictions/<output>``, with the model
version and the run's lineage in the commit. On a cluster::

    ray job submit --working-dir . -- python -m jobs.batch_predict \\
        --config configs/jobs/batch_predict_churn.yaml

``--model-version N`` / ``--alias A`` / ``--output NAME`` override the config. Prints one
line per stage and, last, the lineage record as JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from jobs._common import job_parser, job_platform, run
from raymlp.config import BatchPredictJobConfig, load_config, load_config_file


def main(argv: Sequence[str] | None = None) -> int:
    from raymlp.inference.batch import run_batch_prediction

    ap = job_parser("batch_predict", "score an entity table into a Delta predictions table")
    ap.add_argument("--config", required=True, help="batch prediction YAML (BatchPredictJobConfig)")
    ap.add_argument("--model-version", type=int, default=None, help="pin this model version")
    ap.add_argument("--alias", default=None, help="score with this alias's holder")
    ap.add_argument("--output", default=None, help="predictions table name")
    args = ap.parse_args(argv)
    cfg = load_config_file(BatchPredictJobConfig, args.config)
    if args.model_version is not None or args.alias or args.output:
        data = cfg.model_dump(mode="json")
        if args.model_version is not None:
            data["model"]["version"] = args.model_version
        if args.alias:
            data["model"].update(alias=args.alias, version=None)
        if args.output:
            data["output"] = args.output
        cfg = load_config(BatchPredictJobConfig, data, f"{args.config} (with flags)")
    p = job_platform(args)
    result = run_batch_prediction(p, cfg, say=lambda m: print(m, flush=True))
    print(
        f"batch_predict: {result.rows} rows scored by {result.model_name} "
        f"v{result.model_version} -> {result.output_uri} (version {result.table_version}) "
        f"in {result.duration_s:.1f}s",
        flush=True,
    )
    print(json.dumps(result.lineage, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
