"""``raymlp demo``: the first ten minutes of raymlp, end to end, on an embedded local Ray.

Stages (each prints its progress):

1. start the platform (two demo principals: ``alice`` the developer, ``bob`` the approver, and a
   read-only ``demo-client`` whose API key the printed ``curl`` lines use);
2. generate a synthetic customer-churn dataset (:mod:`raymlp.training.synthetic`: monthly profile
   and usage rows per customer whose values change over time, and a churn label drawn from a
   logistic model of them);
3. apply ``configs/features/churn.yaml``; 4. ingest both views (Ray Data → Delta) and materialize
   the online store;
5. train with Ray Tune × Ray Train + DeepSpeed on a small budget, registering the model and its
   fallback with lineage (``configs/train/churn.yaml``);
6. approval: alice requests promotion to ``production``, bob approves;
7. deploy the Serve application (``configs/serve/churn.yaml``);
8. real HTTP predictions by entity (online features) and by features;
9. train a second version and start a canary of it;
10. the monitor report, the URLs and ready-to-paste ``curl`` lines; then serve until Ctrl-C.

``--smoke`` runs the same with a tiny budget, checks the answers and exits 0 (``make test`` runs
it). Example::

    raymlp demo            # or: make demo
    raymlp demo --smoke
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raymlp.config import PlatformConfig, hash_api_key
from raymlp.errors import RayMLPError, UnavailableError

__all__ = ["DemoSettings", "run_demo", "DEMO_KEYS"]

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

#: API keys of the demo principals (printed; never use these outside the demo).
DEMO_KEYS = {"alice": "demo-alice-key", "bob": "demo-bob-key", "demo-client": "demo-api-key"}
MODEL = "customer-churn"


@dataclass
class DemoSettings:
    """What the demo does; ``smoke()`` is the tiny budget of ``raymlp demo --smoke``."""

    root: str = ".raymlp/demo"
    customers: int = 20_000
    months: int = 4
    train_overrides: dict[str, Any] | None = None
    canary_overrides: dict[str, Any] | None = None
    canary_weight: float = 25.0
    keep_serving: bool = True
    check: bool = False
    http_port: int = 8000

    @classmethod
    def smoke(cls, root: str = ".raymlp/demo-smoke") -> DemoSettings:
        tiny = {"tune.num_samples": 1, "tune.max_concurrent_trials": 1, "training.epochs": 2,
                "scaling.num_workers": 1, "fallback.epochs": 2}
        return cls(root=root, customers=600, months=2, train_overrides=tiny,
                   canary_overrides={**tiny, "training.epochs": 1}, keep_serving=False,
                   check=True)


class _Stages:
    def __init__(self, total: int) -> None:
        self.total, self.n, self.t0 = total, 0, time.monotonic()

    def __call__(self, title: str) -> None:
        self.n += 1
        print(f"\n[{self.n}/{self.total}] {title}  (t+{time.monotonic() - self.t0:.0f}s)",
              flush=True)


def _say(msg: str) -> None:
    print(f"      {msg}", flush=True)


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def demo_platform_config(root: str, http_port: int) -> PlatformConfig:
    """A platform config with auth on and the demo principals."""
    principals = [
        {"name": "alice", "roles": ["developer"], "api_key_sha256": hash_api_key(DEMO_KEYS["alice"])},
        {"name": "bob", "roles": ["approver"], "api_key_sha256": hash_api_key(DEMO_KEYS["bob"])},
        {"name": "demo-client", "roles": ["viewer"],
         "api_key_sha256": hash_api_key(DEMO_KEYS["demo-client"])},
        {"name": "serving-svc", "roles": ["viewer"]},
        # The monitor acts as this principal when it advances or rolls back a canary.
        {"name": "monitor", "roles": ["developer"]},
    ]
    return PlatformConfig.model_validate({
        "storage": {"root": root},
        "http": {"host": "127.0.0.1", "port": http_port},
        "auth": {"tenants": [{"name": "default"}], "principals": principals},
        "registry": {"approval_required": True},
    })


def _post(url: str, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise UnavailableError(f"demo check failed: {what}", check=what)


def run_demo(settings: DemoSettings, address: str | None = None) -> int:
    """Run the demo; returns the exit code (0 ok)."""
    import raymlp
    from raymlp.config import ServeAppConfig, load_train_config
    from raymlp.training.pipeline import run_training_job
    from raymlp.training.synthetic import churn_feature_tables
    from raymlp.training.tuning import apply_overrides

    stage = _Stages(10)
    root = Path(settings.root).resolve()
    if root.exists():
        shutil.rmtree(root)  # the demo's own data: a fresh start each run
    port = _free_port(settings.http_port)
    cfg = demo_platform_config(str(root), port)

    stage("starting raymlp on an embedded local Ray")
    p = raymlp.connect(address or "local", config=cfg, api_key=DEMO_KEYS["alice"])
    bob = p.as_principal(api_key=DEMO_KEYS["bob"])
    _say(f"storage root {root}; acting as {p.principal.name} (developer)")
    _say(f"Ray dashboard: {p.dashboard_url or '(not running)'}")

    stage(f"generating synthetic churn data: {settings.customers} customers x "
          f"{settings.months} months")
    tables = churn_feature_tables(settings.customers, months=settings.months, seed=7)
    data_dir = root / "demo-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    for name, table in tables.items():
        pq.write_table(table, data_dir / f"{name}.parquet")
        _say(f"{name}: {table.num_rows} rows")

    stage("applying feature definitions (configs/features/churn.yaml)")
    for change in p.features.apply(REPO_CONFIGS / "features" / "churn.yaml"):
        _say(f"{change['kind']} {change['name']}: {change['action']}")

    stage("ingesting (Ray Data -> Delta) and materializing the online store")
    for view in ("customer_profile", "customer_usage"):
        version = p.features.ingest(view, str(data_dir / f"{view}.parquet"))
        _say(f"{view}: Delta version {version}")
    for m in p.features.materialize():
        _say(f"online {m['view']}: {m['rows_upserted']} entities")

    stage("training: Ray Tune x Ray Train + DeepSpeed, then registering model + fallback")
    train_cfg = load_train_config(REPO_CONFIGS / "train" / "churn.yaml")
    overrides = {"dataset.entity_table": str(data_dir / "labels.parquet"),
                 **(settings.train_overrides or {})}
    train_cfg = apply_overrides(train_cfg, overrides, source="demo")
    result = run_training_job(p, train_cfg, say=_say)
    v1 = result.version
    _say(f"registered {MODEL} v{v1}: test AUC {result.test_metrics['auc']:.3f}; fallback "
         f"{result.fallback_name} v{result.fallback_version}")

    stage("approval: alice requests promotion to production, bob approves")
    pending = [r for r in p.registry.requests(MODEL) if r.get("version") == v1]
    req = pending[0] if pending else p.registry.request_promotion(
        MODEL, v1, alias="production", reason="demo: first model")
    request_id = (req.get("id") or req.get("request_id")) if isinstance(req, dict) else req
    bob.registry.approve(request_id, comment="looks good (demo)")
    prod = p.registry.get(MODEL, alias="production")
    _check(prod.version == v1, "production alias holds the approved version")
    _say(f"production -> v{prod.version} (approved by bob)")

    stage("deploying the Serve application (configs/serve/churn.yaml)")
    serve_cfg = p.serve.load_config(REPO_CONFIGS / "serve" / "churn.yaml")
    serve_cfg = ServeAppConfig.model_validate(
        {**serve_cfg.model_dump(mode="json"), "principal": "serving-svc"})
    url = p.serve.deploy(serve_cfg).rstrip("/")
    _say(f"serving at {url}")

    stage("predictions over HTTP: by entity (online features) and by features")
    key = DEMO_KEYS["demo-client"]
    customers = list(dict.fromkeys(tables["customer_profile"].column("customer_id").to_pylist()))[:5]
    answers = []
    for cid in customers[:3]:
        status, body = _post(f"{url}/v1/predictions",
                             {"model_id": MODEL, "entity": {"customer_id": cid}}, key)
        answers.append((status, body))
        _say(f"entity {cid}: HTTP {status} {json.dumps(body)}")
    features = {"tenure_months": 3, "monthly_charges": 99.5, "total_charges": 298.5,
                "contract_type": "month-to-month", "paperless_billing": True, "num_products": 1,
                "calls_last_30d": 12, "data_gb_last_30d": 2.5, "support_tickets_90d": 4,
                "dropped_call_rate": 0.09}
    status, body = _post(f"{url}/v1/predictions", {"model_id": MODEL, "features": features}, key)
    answers.append((status, body))
    _say(f"features: HTTP {status} {json.dumps(body)}")
    if settings.check:
        for status, body in answers:
            _check(status == 200, f"HTTP 200 (got {status}: {body})")
            _check(0.0 <= body["probability"] <= 1.0, "a probability in [0, 1]")
            _check(body["model_version"] in (v1, str(v1)), f"served by v{v1}")
        bad_status, bad = _post(f"{url}/v1/predictions",
                                {"model_id": MODEL, "features": {"tenure_months": "x"}}, key)
        _check(bad_status == 422 and "error" in bad, "a bad request gets 422 with the error schema")

    stage(f"training a second version and starting a {settings.canary_weight:g}% canary")
    canary_cfg = apply_overrides(train_cfg, settings.canary_overrides or {}, source="demo")
    v2 = run_training_job(p, canary_cfg, say=_say).version
    p.serve.canary(MODEL, version=v2, weight=settings.canary_weight, steps=[5, 25, 50, 100])
    routes: Counter[str] = Counter()
    ids = list(dict.fromkeys(tables["customer_usage"].column("customer_id").to_pylist()))
    for cid in ids[: 60 if settings.check else 40]:
        status, body = _post(f"{url}/v1/predictions",
                             {"model_id": MODEL, "entity": {"customer_id": cid}}, key)
        routes[f"{body.get('route')}:v{body.get('model_version')}" if status == 200
               else f"HTTP {status}"] += 1
    _say(f"routes of {sum(routes.values())} entity predictions: " + ", ".join(f"{k} x{v}" for k, v in routes.items()))
    if settings.check:
        _check(any(k.startswith("canary") for k in routes), "some entities go to the canary")
        _check(all(not k.startswith("HTTP") for k in routes), "no errors under the canary")

    stage("monitor report")
    try:
        print(p.monitor.report_text(MODEL, start="1h"))
    except RayMLPError as e:
        _say(f"(monitor report unavailable: {e})")

    print("\nraymlp demo is serving.")
    print(f"  API          {url}/v1/predictions")
    print(f"  OpenAPI docs {url}/docs   (spec: {url}/openapi.json)")
    print(f"  Ray dashboard {p.dashboard_url or '(not running)'}")
    print("Try it:")
    print(f"  curl -s -X POST {url}/v1/predictions -H 'X-API-Key: {key}' "
          f"-H 'Content-Type: application/json' "
          f"-d '{{\"model_id\": \"{MODEL}\", \"entity\": {{\"customer_id\": \"{customers[0]}\"}}}}'")
    print(f"  curl -s -X POST {url}/v1/predictions -H 'X-API-Key: {key}' "
          f"-H 'Content-Type: application/json' "
          f"-d '{json.dumps({'model_id': MODEL, 'features': features})}'")
    print(f"  curl -s {url}/v1/models -H 'X-API-Key: {key}'")
    if not settings.keep_serving:
        print("smoke demo: all checks passed" if settings.check else "demo done")
        return 0
    print("serving until Ctrl-C ...", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping")
    return 0


def settings_from_args(smoke: bool, root: str | None) -> DemoSettings:
    s = DemoSettings.smoke() if smoke else DemoSettings()
    if root:
        s.root = root
    return s
