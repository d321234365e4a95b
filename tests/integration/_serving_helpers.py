"""Support of ``test_serving_app.py``: the served application (platform with auth on, models
from real artifacts, the app deployed through ``p.serve``) and small HTTP helpers. No tests here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from ray import serve

from raymlp._private import cluster as cluster_lib
from raymlp.client import connect
from raymlp.config import PlatformConfig, hash_api_key
from raymlp.predictor.artifact import load_predictor, read_json
from raymlp.serving.examples import example_features, make_artifact, set_control
from tests._net import free_port
from tests._wait import wait_for

KEYS = {"ops": "key-ops", "alice": "key-alice", "gina": "key-gina"}
FLAKY = "raymlp.serving.examples:flaky_mlp"


class Served:
    """Handles on the running application."""

    def __init__(self, p: Any, url: str, tmp: Any, artifacts: dict[str, Any]) -> None:
        self.p, self.url, self.tmp, self.artifacts = p, url, tmp, artifacts
        self.http = httpx.Client(base_url=url, timeout=30)
        self.n = 0

    def post(
        self, path: str = "/v1/predictions", body: Any = None, key: str | None = "ops", **kw: Any
    ) -> httpx.Response:
        headers = {"x-api-key": KEYS[key]} if key else {}
        headers.update(kw.pop("headers", {}))
        return self.http.post(path, json=body, headers=headers, **kw)

    def predict(
        self, features: dict[str, Any] | None = None, model: str = "churn", **extra: Any
    ) -> httpx.Response:
        if features is None:
            self.n += 1
            features = example_features(1000 + self.n)  # fresh: never a cache hit
        return self.post(body={"model_id": model, "features": features, **extra})

    def model(self, name: str = "churn", key: str = "ops") -> dict[str, Any]:
        r = self.http.get(f"/v1/models/{name}", headers={"x-api-key": KEYS[key]})
        assert r.status_code == 200, r.text
        return r.json()

    def control(self, name: str, **kw: Any) -> None:
        set_control(self.tmp / f"{name}.ctl", **kw)

    def heal(self) -> None:
        for name in ("v1", "v3", "fb", "other"):
            self.control(name)

    def wait_primary(self, timeout: float = 60) -> None:
        """Until the stable version answers again (breaker closed, replica up)."""
        self.heal()
        wait_for(
            lambda: self.predict().json().get("route") == "primary",
            timeout=timeout,
            interval=0.3,
            message="the primary route to answer again",
        )


def served_app(tmp: Path) -> Iterator[Served]:
    """Bring the platform and the application up under ``tmp``; tear both down after."""
    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp / "root")},
            "registry": {"approval_required": False},
            # The routing tests set canaries by hand; the monitor's canary analysis (tested in
            # test_monitor_actor) would roll back v2, a different model, on prediction drift.
            "monitor": {"monitoring": {"canary": {"auto_rollback": False, "auto_advance": False}}},
            "auth": {
                "tenants": [{"name": "acme"}, {"name": "globex"}],
                "principals": [
                    {
                        "name": "ops",
                        "tenant": "acme",
                        "roles": ["admin"],
                        "api_key_sha256": hash_api_key(KEYS["ops"]),
                    },
                    {"name": "serving", "tenant": "acme", "roles": ["admin"]},
                    # The monitor reads every tenant's models (a keyless service principal).
                    {"name": "monitor", "tenant": "acme", "roles": ["admin"]},
                    {
                        "name": "alice",
                        "tenant": "acme",
                        "roles": ["viewer"],
                        "api_key_sha256": hash_api_key(KEYS["alice"]),
                    },
                    {
                        "name": "gina",
                        "tenant": "globex",
                        "roles": ["developer"],
                        "api_key_sha256": hash_api_key(KEYS["gina"]),
                    },
                ],
                "default_principal": "ops",
            },
        }
    )
    p = connect(config=cfg, api_key=KEYS["ops"])
    for name in ("v1", "v3", "fb", "other"):
        set_control(tmp / f"{name}.ctl")
    arts = {
        "v1": make_artifact(
            tmp / "v1",
            seed=1,
            factory=FLAKY,
            kwargs={"hidden_dims": [16], "control": str(tmp / "v1.ctl")},
        ),
        "v2": make_artifact(tmp / "v2", seed=2),
        "v3": make_artifact(
            tmp / "v3",
            seed=3,
            factory=FLAKY,
            kwargs={"hidden_dims": [16], "control": str(tmp / "v3.ctl")},
        ),
        "fb": make_artifact(
            tmp / "fb",
            seed=9,
            factory=FLAKY,
            kwargs={"hidden_dims": [], "control": str(tmp / "fb.ctl")},
        ),
        "other": make_artifact(
            tmp / "other",
            seed=5,
            factory=FLAKY,
            kwargs={"hidden_dims": [16], "control": str(tmp / "other.ctl")},
        ),
        "online": make_artifact(
            tmp / "online",
            seed=6,
            feature_refs={
                "tenure_months": "cust:tenure_months",
                "monthly_charges": "cust:monthly_charges",
                "contract": "cust:contract",
                "support_calls": "cust:support_calls",
            },
        ),
    }
    sig = read_json(arts["v1"], "signature")
    reg = p.registry
    fb = reg.register("churn-fallback", arts["fb"], signature=sig)
    lineage = {"fallback_model": {"name": "churn-fallback", "version": fb}}
    for key in ("v1", "v2", "v3"):
        reg.register("churn", arts[key], signature=sig, lineage=lineage)
    reg.promote("churn", 1, "production")
    reg.register("other", arts["other"], signature=sig, tenant="globex")
    reg.promote("other", 1, "production")
    reg.register("churn-online", arts["online"], signature=sig)
    reg.promote("churn-online", 1, "production")
    p.features.apply(
        {
            "entities": [{"name": "customer", "join_keys": ["customer_id"]}],
            "feature_views": [
                {
                    "name": "cust",
                    "entities": ["customer"],
                    "schema": [
                        {"name": "tenure_months", "dtype": "int64"},
                        {"name": "monthly_charges", "dtype": "float64"},
                        {"name": "contract", "dtype": "string"},
                        {"name": "support_calls", "dtype": "int64"},
                    ],
                }
            ],
        }
    )
    p.features.push(
        "cust",
        [
            {"customer_id": f"c{i}", "event_timestamp": datetime.now(UTC), **example_features(i)}
            for i in range(40)
        ],
    )

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = p.serve.deploy(
        {
            "name": "svc",
            "principal": "serving",
            "http": {"host": "127.0.0.1", "port": port},
            "models": [
                {
                    "name": "churn",
                    "entity_keys": ["customer_id"],
                    "rules": [
                        {
                            "name": "young",
                            "when": {"tenure_months": {"lt": 12}},
                            "prediction": "churn",
                            "probability": 0.9,
                        }
                    ],
                    "default_response": {"prediction": "stay", "probability": 0.3},
                },
                {"name": "other"},
                {"name": "churn-online", "entity_keys": ["customer_id"]},
            ],
            "gateway": {
                "num_replicas": 1,
                "num_cpus": 0,
                "max_inflight": 24,
                "refresh_interval_s": 5,
            },
            "model_server": {
                "num_replicas": 1,
                "num_cpus": 0,
                "max_models_per_replica": 8,
                "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.005},
            },
            "fallback_server": {"num_replicas": 1, "num_cpus": 0},
            "timeouts": {"primary_s": 0.5, "fallback_s": 0.5, "warmup_s": 60},
            "breaker": {
                "consecutive_failures": 3,
                "min_calls": 50,
                "cooldown_s": 1.5,
                "half_open_calls": 1,
                "window_s": 10,
            },
        }
    )
    s = Served(p, url, tmp, arts)
    try:
        yield s
    finally:
        s.http.close()
        serve.shutdown()
        cluster_lib.remove_platform(cfg.ray.namespace, cfg)


def local_probability(served: Served, artifact: str, features: dict[str, Any]) -> float:
    return float(load_predictor(served.artifacts[artifact]).predict_proba([features])[0])


async def post_many(
    url: str, bodies: list[dict[str, Any]], concurrency: int = 16
) -> list[dict[str, Any]]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:

        async def one(b: dict[str, Any]) -> dict[str, Any]:
            async with sem:
                r = await c.post("/v1/predictions", json=b, headers={"x-api-key": KEYS["ops"]})
                assert r.status_code == 200, r.text
                return r.json()

        return await asyncio.gather(*(one(b) for b in bodies))
