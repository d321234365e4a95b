"""``raymlp demo``: the first ten minutes of raymlp, end to end, on an embedded local Ray.

Stages (each prints its progress):

1. start the platform (two demo principals: ``alice`` the developer, ``bob`` the approver, and a
   read-only ``demo-client`` whose API key the printed ``curl`` lines use);
2. generate a synthetic customer-churn dataset (:mod:`raymlp.training.synthetic`: monthly profile
   and usage rows per customer whose values change over time, and a churn label drawn from a
   logistic model of them);
3. apply ``configs/features/churn.yaml``, ingest both views (Ray Data → Delta) and materialize
   the online store;
4. train with Ray Tune × Ray Train + DeepSpeed on a small budget, registering the model and its
   fallback with lineage (``configs/train/churn.yaml``);
5. approval: alice requests promotion to ``production``, bob approves;
6. deploy the Serve application (``configs/serve/churn.yaml``);
7. real HTTP predictions by entity (online features) and by features;
8. train a second version and start a canary of it;
9. the monitor report, the URLs and ready-to-paste ``curl`` lines; then serve until Ctrl-C.

``--smoke`` runs the same with a tiny budget, checks the answers and exits 0 (``make test`` runs
it). Example::

    raymlp demo            # or: make demo
    raymlp demo --smoke
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from raymlp._private.churn_example import (
    EXAMPLE_FEATURES,
    MODEL,
    REPO_CONFIGS,
    curl_lines,
    load_churn_features,
    train_churn,
    write_churn_data,
)
from raymlp.config import PlatformConfig, hash_api_key
from raymlp.errors import RayMLPError, UnavailableError

__all__ = ["DemoSettings", "run_demo", "DEMO_KEYS"]

#: API keys of the demo principals (printed; never use these outside the demo).
DEMO_KEYS = {"alice": "demo-alice-key", "bob": "demo-bob-key", "demo-client": "demo-api-key"}


@dataclass
class DemoSettings:
    """What the demo does; ``smoke()`` is the tiny budget of ``raymlp demo --smoke``."""

    root: str = ".raymlp/demo"
    customers: int = 20_000
    months: int = 4
    train_overrides: dict[str, Any] | None = None
    #: The second version differs a little (training is seeded: the same config would give
    #: the same model, and a canary of an identical model shows nothing).
    canary_overrides: dict[str, Any] | None = field(
        default_factory=lambda: {"optimizer.weight_decay": 0.01})
    # At most registry.max_unapproved_canary_weight (10 %): v2 is not approved.
    canary_weight: float = 10.0
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
        # Worker and replica logs stay in the dashboard: the console shows the stages.
        "ray": {"log_to_driver": False},
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
    from raymlp.config import ServeAppConfig

    stage = _Stages(9)
    root = Path(settings.root).resolve()
    if root.exists():
        shutil.rmtree(root)  # the demo's own data: a fresh start each run
    port = _free_port(settings.http_port)
    cfg = demo_platform_config(str(root), port)

    stage("starting raymlp on an embedded local Ray")
    p = raymlp.connect(address or "local", config=cfg, api_key=DEMO_KEYS["alice"])
    bob = p.as_principal(api_key=DEMO_KEYS["bob"])
    _quiet_ray_data()
    _say(f"storage root {root}; acting as {p.principal.name} (developer)")
    _say(f"Ray dashboard: {p.dashboard_url or '(not running)'}")

    stage(f"generating synthetic churn data: {settings.customers} customers x "
          f"{settings.months} months")
    data = write_churn_data(p, settings.customers, settings.months, prefix="demo-data", say=_say)

    stage("features: apply configs/features/churn.yaml, ingest (Ray Data -> Delta), "
          "materialize the online store")
    load_churn_features(p, data, say=_say)

    stage("training: Ray Tune x Ray Train + DeepSpeed, then registering model + fallback")
    result = train_churn(p, data["labels"]["uri"], settings.train_overrides, say=_say)
    v1 = result.version
    _say(f"registered {MODEL} v{v1}: test AUC {result.test_metrics['auc']:.3f}; fallback "
         f"{result.fallback_name} v{result.fallback_version}")

    stage("approval: alice requests promotion to production, bob approves")
    pending = [r for r in p.registry.requests(MODEL) if r.get("version") == v1]
    req = pending[0] if pending else p.registry.request_promotion(
        MODEL, v1, alias="production", reason="demo: first model")
    # A request record always carries its id ("pr-N"); request_promotion returns it.
    request_id = cast(
        str, (req.get("id") or req.get("request_id")) if isinstance(req, dict) else req)
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
    customers = data["customer_profile"]["ids"][:5]
    answers = []
    for cid in customers[:3]:
        status, body = _post(f"{url}/v1/predictions",
                             {"model_id": MODEL, "entity": {"customer_id": cid}}, key)
        answers.append((status, body))
        _say(f"entity {cid}: HTTP {status} {json.dumps(body)}")
    status, body = _post(f"{url}/v1/predictions",
                         {"model_id": MODEL, "features": EXAMPLE_FEATURES}, key)
    answers.append((status, body))
    _say(f"features: HTTP {status} {json.dumps(body)}")
    if settings.check:
        for status, body in answers:
            _check(status == 200, f"HTTP 200 (got {status}: {body})")
            _check(0.0 <= body["probability"] <= 1.0, "a probability in [0, 1]")
            _check(body["model_version"] in (v1, str(v1)), f"served by v{v1}")
        by_entity = {round(body["probability"], 6) for _, body in answers[:3]}
        _check(len(by_entity) > 1, "entity answers come from each entity's online features")
        bad_status, bad = _post(f"{url}/v1/predictions",
                                {"model_id": MODEL, "features": {"tenure_months": "x"}}, key)
        _check(bad_status == 422 and "error" in bad, "a bad request gets 422 with the error schema")

    stage(f"training a second version and starting a {settings.canary_weight:g}% canary")
    canary_overrides = {**(settings.train_overrides or {}), **(settings.canary_overrides or {})}
    v2 = train_churn(p, data["labels"]["uri"], canary_overrides, say=_say).version
    p.serve.canary(MODEL, version=v2, weight=settings.canary_weight, steps=[5, 10, 25, 50, 100])
    routes: Counter[str] = Counter()
    ids = data["customer_usage"]["ids"]
    # 200: at a 10 % canary the first 60 ids of the smoke data happen to hash to stable only.
    for cid in ids[: 200 if settings.check else 40]:
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
        _await_logged(p, sent=sum(routes.values()) + len(answers))
        print(p.monitor.report_text(MODEL, start="1h"))
    except RayMLPError as e:
        _say(f"(monitor report unavailable: {e})")

    print("\nraymlp demo is serving.")
    print(f"  API          {url}/v1/predictions")
    print(f"  OpenAPI docs {url}/docs   (spec: {url}/openapi.json)")
    print(f"  Ray dashboard {p.dashboard_url or '(not running)'}")
    print("Try it:")
    for line in curl_lines(url, customers[0], key):
        print(f"  {line}")
    if not settings.keep_serving:
        print("smoke demo: all checks passed" if settings.check else "demo done")
        return 0
    print("serving until Ctrl-C ...", flush=True)
    _serve_until_interrupted()
    print("stopping")
    return 0


def _quiet_ray_data() -> None:
    """Ray Data logs every execution's plan and progress to a non-interactive console; the
    demo's own stage lines say what runs (the dashboard has the rest)."""
    import logging

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _await_logged(p: Any, sent: int, timeout_s: float = 20.0) -> None:
    """Wait (bounded) until the gateways' prediction logs have reached the monitor, so the
    report covers the requests just sent (they ship every ``flush_interval_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if p.monitor.report(MODEL, start="1h")["traffic"]["requests"] >= sent:
            return
        time.sleep(0.5)  # polling the monitor actor; the condition is checked above


def _serve_until_interrupted() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM, whatever handlers libraries left behind."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


def settings_from_args(smoke: bool, root: str | None) -> DemoSettings:
    s = DemoSettings.smoke() if smoke else DemoSettings()
    if root:
        s.root = root
    return s
