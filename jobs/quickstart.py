"""Quickstart job: the whole churn lifecycle on the *running* platform, in one job.

::

    raymlp up --address <head>        # once per cluster
    ray job submit --working-dir . -- python -m jobs.quickstart

Stages, one line of progress each: synthetic churn data written under the storage root
(``<root>/quickstart/data``, so every node reads it) → feature definitions applied, both views
ingested and materialized → Tune × Train + DeepSpeed on a small budget, model + fallback
registered, promotion gate → the Serve application deployed (``configs/serve/churn.yaml``) →
predictions by entity and by features through the Serve handle → batch predictions of the
labelled table into ``<root>/predictions/quickstart_scores``. The last line is a JSON summary.

Where the platform needs approval for ``production`` (the default), ``--approver-key KEY``
(auth on) or ``--approver NAME`` (auth off) approves the promotion request as that second
principal. Without either, the job stops after training with the request's id (an approver runs
``raymlp models approve <id>``, then ``jobs.deploy``) — unless a version already holds
``production``, which is then what gets deployed. With auth on, ``--principal`` names the
serving service principal.

Unlike ``raymlp demo`` (its own embedded cluster and platform), this joins what is running:
the platform ``raymlp up`` published, with its own storage root and principals.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from jobs._common import job_parser, job_platform, run
from raymlp._private.churn_example import (
    EXAMPLE_FEATURES,
    MODEL,
    REPO_CONFIGS,
    curl_lines,
    load_churn_features,
    train_churn,
    write_churn_data,
)
from raymlp.cli._common import parse_overrides
from raymlp.config import BatchPredictJobConfig, ServeAppConfig, load_config, load_config_file
from raymlp.errors import NotFoundError, ValidationError

#: A budget that trains in about a minute on two CPU cores (``--set`` adds to it).
QUICK_BUDGET: dict[str, Any] = {
    "tune.num_samples": 1, "tune.max_concurrent_trials": 1, "training.epochs": 2,
    "scaling.num_workers": 1, "fallback.epochs": 2,
}
SCORES_TABLE = "quickstart_scores"


def _say(msg: str) -> None:
    print(f"quickstart: {msg}", flush=True)


def _production_version(p: Any) -> int | None:
    try:
        return p.registry.get(MODEL, alias="production").version
    except NotFoundError:
        return None


def _serve_config(p: Any, serve_config: str, principal: str | None) -> ServeAppConfig:
    """The serve config (with ``--principal``), checked against the platform's principals."""
    from raymlp._private.principals import check_service_principal

    cfg = p.serve.load_config(serve_config)
    if principal:
        cfg = ServeAppConfig.model_validate({**cfg.model_dump(mode="json"), "principal": principal})
    check_service_principal(p.config, cfg.principal)
    return cfg


def _predict(p: Any, app: str, customer_ids: list[str]) -> list[dict[str, Any]]:
    answers = []
    for cid in customer_ids:
        body = p.serve.predict(MODEL, entity={"customer_id": cid}, app=app)
        answers.append(body)
        _say(f"entity {cid}: {json.dumps(body)}")
    body = p.serve.predict(MODEL, EXAMPLE_FEATURES, app=app)
    answers.append(body)
    _say(f"features: {json.dumps(body)}")
    for body in answers:
        if body.get("error") or not 0.0 <= float(body.get("probability", -1)) <= 1.0:
            raise ValidationError(f"quickstart: unexpected prediction {body!r}",
                                  field="prediction", value=body, rule="probability in [0, 1]")
    return answers


def _batch_predict(p: Any, entity_table: str) -> Any:
    from raymlp.inference.batch import run_batch_prediction

    base = load_config_file(BatchPredictJobConfig,
                            REPO_CONFIGS / "jobs" / "batch_predict_churn.yaml")
    cfg = load_config(
        BatchPredictJobConfig,
        {**base.model_dump(mode="json"), "entity_table": entity_table, "output": SCORES_TABLE,
         "concurrency": 1},
        "quickstart batch prediction",
    )
    return run_batch_prediction(p, cfg, say=_say)


def main(argv: Sequence[str] | None = None) -> int:
    ap = job_parser("quickstart", "the churn lifecycle on the running platform, in one job")
    ap.add_argument("--customers", type=int, default=2000, help="synthetic customers (2000)")
    ap.add_argument("--months", type=int, default=3, help="months of history per customer (3)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training setting (YAML value), after the quick budget")
    ap.add_argument("--serve-config", default=str(REPO_CONFIGS / "serve" / "churn.yaml"),
                    help="serve YAML (default: configs/serve/churn.yaml)")
    ap.add_argument("--principal", default=None,
                    help="service principal the application acts as (auth on)")
    ap.add_argument("--approver-key", default=None,
                    help="approve the promotion request with this approver's API key")
    ap.add_argument("--approver", default=None, metavar="NAME",
                    help="approve it as this principal (auth off: any name but your own)")
    ap.add_argument("--no-serve", action="store_true", help="stop after training")
    args = ap.parse_args(argv)
    if args.customers < 50:
        ap.error(f"--customers must be >= 50 (got {args.customers})")
    if not 1 <= args.months <= 24:
        ap.error(f"--months must be within 1..24 (got {args.months})")
    overrides = {**QUICK_BUDGET, **parse_overrides(args.overrides)}
    t0 = time.monotonic()
    summary: dict[str, Any] = {"model": MODEL}

    p = job_platform(args)
    if not args.no_serve:  # a serve config or principal problem shows now, not after training
        serve_cfg = _serve_config(p, args.serve_config, args.principal)
    _say(f"platform at {p.storage.root} as {p.principal.name}; dashboard "
         f"{p.dashboard_url or '(not running)'}")
    _say(f"1/5 synthetic churn data: {args.customers} customers x {args.months} months")
    data = write_churn_data(p, args.customers, args.months, prefix="quickstart/data", say=_say)

    _say("2/5 features: apply, ingest (Ray Data -> Delta), materialize")
    load_churn_features(p, data, say=_say)

    _say("3/5 training: Tune x Train + DeepSpeed, registry, fallback, promotion gate")
    result = train_churn(p, data["labels"]["uri"], overrides, say=_say)
    summary.update(version=result.version, test_auc=round(result.test_metrics["auc"], 4),
                   fallback_version=result.fallback_version, promotion=result.promotion)
    _say(f"registered {MODEL} v{result.version} (test AUC {result.test_metrics['auc']:.3f}); "
         f"gate: {result.gate.get('reason')}")
    request = (result.promotion or {}).get("request_id")
    if request and (args.approver_key or args.approver):
        approver = p.as_principal(api_key=args.approver_key, principal=args.approver)
        approver.registry.approve(request, comment="jobs.quickstart --approver")
        _say(f"{approver.principal.name} approved {request}: production -> v{result.version}")
        summary["approved_by"] = approver.principal.name
    production = _production_version(p)
    summary["production_version"] = production
    if production is None:
        if request:
            _say(f"production needs approval: an approver runs `raymlp models approve {request}`,"
                 " then runs jobs.deploy")
        else:
            _say("no version holds production (the gate did not promote); not serving")
        args.no_serve = True

    if not args.no_serve:
        _say(f"4/5 serving production v{production} ({args.serve_config})")
        url, app = p.serve.deploy(serve_cfg).rstrip("/"), serve_cfg.name
        answers = _predict(p, app, data["customer_profile"]["ids"][:3])
        summary.update(url=url, app=app, predictions=len(answers))
        key = "$RAYMLP_API_KEY" if p.config.auth.enabled else None  # a key of the caller's
        for line in curl_lines(url, data["customer_profile"]["ids"][0], key):
            _say(f"try: {line}")

        _say(f"5/5 batch predictions of the labelled table -> predictions/{SCORES_TABLE}")
        scored = _batch_predict(p, data["labels"]["uri"])
        summary.update(scored_rows=scored.rows, scores_uri=scored.output_uri,
                       scores_table_version=scored.table_version)

    summary["duration_s"] = round(time.monotonic() - t0, 1)
    _say("done")
    print(json.dumps(summary, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
