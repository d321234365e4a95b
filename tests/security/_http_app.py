"""Support of the HTTP security tests: a live serving application on loopback with auth on
and two tenants, models from real artifacts. No tests here.

Principals (API keys in :data:`KEYS`)::

    acme:    ops (admin), alice (viewer), dev (developer)
    globex:  gina (developer), gus (viewer)

Models: ``churn`` (acme; v1 production, v2 registered and not served), ``churn-online``
(acme; entity requests through the online store, view ``cust``), ``other`` (globex; v1).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from ray import serve

from raymlp._private import cluster as cluster_lib
from raymlp.client import connect
from raymlp.config import PlatformConfig, hash_api_key
from raymlp.predictor.artifact import read_json
from raymlp.serving.examples import example_features, make_artifact
from tests._net import free_port

KEYS = {
    "ops": "sec-key-ops",
    "alice": "sec-key-alice",
    "dev": "sec-key-dev",
    "gina": "sec-key-gina",
    "gus": "sec-key-gus",
}
PRINCIPALS = [
    ("ops", "acme", ["admin"]),
    ("alice", "acme", ["viewer"]),
    ("dev", "acme", ["developer"]),
    ("gina", "globex", ["developer"]),
    ("gus", "globex", ["viewer"]),
]
ERROR_KEYS = {"code", "message", "details"}


class App:
    """Handles on the running application, and small HTTP helpers."""

    def __init__(self, p: Any, url: str, cfg: PlatformConfig) -> None:
        self.p, self.url, self.cfg = p, url, cfg
        self.http = httpx.Client(base_url=url, timeout=60)
        self.n = 0

    def headers(self, who: str | None) -> dict[str, str]:
        return {"x-api-key": KEYS[who]} if who else {}

    def post(self, path: str, body: Any, who: str | None = "ops", **kw: Any) -> httpx.Response:
        headers = {**self.headers(who), **kw.pop("headers", {})}
        return self.http.post(path, json=body, headers=headers, **kw)

    def get(self, path: str, who: str | None = "ops") -> httpx.Response:
        return self.http.get(path, headers=self.headers(who))

    def fresh(self) -> dict[str, Any]:
        """Valid features never sent before (no cache hit)."""
        self.n += 1
        return example_features(5000 + self.n)

    def predict(self, who: str = "ops", model: str = "churn", **extra: Any) -> httpx.Response:
        return self.post(
            "/v1/predictions", {"model_id": model, "features": self.fresh(), **extra}, who
        )

    def gateway_stats(self) -> dict[str, Any]:
        return self.p.serve.handle().stats.remote().result(timeout_s=30)

    def model_server_stats(self) -> dict[str, Any]:
        h = serve.get_deployment_handle("ModelServer", app_name="sec")
        return h.stats.remote().result(timeout_s=30)


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``r`` is ``status`` with the error schema and ``code``; returns ``error``."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    assert "Traceback" not in r.text
    return body["error"]


def http_app(tmp: Path, gateway: dict[str, Any] | None = None) -> Iterator[App]:
    """The platform and the application up under ``tmp`` (``gateway``: settings merged into
    the gateway section); both torn down after."""
    principals = [
        {"name": n, "tenant": t, "roles": r, "api_key_sha256": hash_api_key(KEYS[n])}
        for n, t, r in PRINCIPALS
    ]
    principals.append({"name": "serving", "tenant": "acme", "roles": ["admin"]})
    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp / "root")},
            "registry": {"approval_required": False},
            "auth": {
                "tenants": [{"name": "acme"}, {"name": "globex"}],
                "principals": principals,
                "default_principal": "ops",
            },
        }
    )
    p = connect(config=cfg, api_key=KEYS["ops"])
    sig = None
    for key, seed, refs in (
        ("v1", 1, None),
        ("v2", 2, None),
        ("other", 5, None),
        (
            "online",
            6,
            {
                "tenure_months": "cust:tenure_months",
                "monthly_charges": "cust:monthly_charges",
                "contract": "cust:contract",
                "support_calls": "cust:support_calls",
            },
        ),
    ):
        path = make_artifact(tmp / key, seed=seed, feature_refs=refs)
        sig = sig or read_json(path, "signature")
        model, tenant = {
            "v1": ("churn", None),
            "v2": ("churn", None),
            "other": ("other", "globex"),
            "online": ("churn-online", None),
        }[key]
        kw = {"tenant": tenant} if tenant else {}
        p.registry.register(model, path, signature=sig, **kw)
    p.registry.promote("churn", 1, "production")
    p.registry.promote("other", 1, "production")
    p.registry.promote("churn-online", 1, "production")
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
            "name": "sec",
            "principal": "serving",
            "http": {"host": "127.0.0.1", "port": port},
            "models": [
                {"name": "churn", "entity_keys": ["customer_id"]},
                {"name": "other"},
                {"name": "churn-online", "entity_keys": ["customer_id"]},
            ],
            "gateway": {"num_replicas": 1, "num_cpus": 0, **(gateway or {})},
            "model_server": {
                "num_replicas": 1,
                "num_cpus": 0,
                "max_models_per_replica": 8,
                # a wait long enough that concurrent requests share batches
                "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
            },
            "fallback_server": {"num_replicas": 1, "num_cpus": 0},
            "timeouts": {"primary_s": 5, "fallback_s": 2, "warmup_s": 60},
        }
    )
    app = App(p, url, cfg)
    try:
        yield app
    finally:
        app.http.close()
        serve.shutdown()
        cluster_lib.remove_platform(cfg.ray.namespace, cfg)
