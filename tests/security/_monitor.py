"""Shared pieces of the monitor security tests: a platform with auth on and two tenants
(``default``: alice, a developer; ``acme``: carol, a developer), a viewer of ``default``, the
keyless service principals the platform runs as (``monitor``, an admin because it watches every
tenant's models; ``serving``, the gateway's viewer identity), one registered model per tenant,
and prediction records."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from raymlp.client import Platform
from raymlp.config import PlatformConfig, hash_api_key

KEYS = {"alice": "alice-key", "carol": "carol-key", "viewer": "viewer-key"}

#: An alert rule that fires on the error rate of any model (per model).
ERRORS_RULE = {
    "name": "errors",
    "metric": "error_rate",
    "threshold": 0.2,
    "window": "5m",
    "severity": "critical",
    "min_count": 10,
}


def auth_config(root: str) -> PlatformConfig:
    return PlatformConfig.model_validate(
        {
            "storage": {"root": root},
            "registry": {"approval_required": False},
            "auth": {
                "tenants": [{"name": "default"}, {"name": "acme"}],
                "principals": [
                    {
                        "name": "alice",
                        "roles": ["developer"],
                        "api_key_sha256": hash_api_key(KEYS["alice"]),
                    },
                    {
                        "name": "carol",
                        "tenant": "acme",
                        "roles": ["developer"],
                        "api_key_sha256": hash_api_key(KEYS["carol"]),
                    },
                    {
                        "name": "viewer",
                        "roles": ["viewer"],
                        "api_key_sha256": hash_api_key(KEYS["viewer"]),
                    },
                    {"name": "monitor", "roles": ["admin"]},
                    {"name": "serving", "roles": ["viewer"]},
                    {"name": "ops", "roles": ["admin"]},
                ],
                "default_principal": "ops",
            },
        }
    )


def as_(platform: Platform, who: str) -> Platform:
    """The platform acting as ``who``: people by API key, services by platform token."""
    if who in KEYS:
        return platform.as_principal(api_key=KEYS[who])
    return platform.as_principal(principal=who)


def register(p: Platform, tmp: Path, model: str, versions: int = 1) -> None:
    art = tmp / f"artifact-{model}"
    art.mkdir(exist_ok=True)
    (art / "weights.bin").write_bytes(b"w")
    for _ in range(versions):
        p.registry.register(model, art)


def records(
    n: int,
    model: str,
    *,
    tenant: str = "default",
    version: int | None = 1,
    route: str = "primary",
    error_rate: float = 0.0,
) -> list[dict[str, Any]]:
    """``n`` prediction records of ``model``, the first ``error_rate`` share of them errors."""
    errors = round(n * error_rate)
    now = time.time()
    return [
        {
            "request_id": uuid.uuid4().hex,
            "model": model,
            "version": version,
            "route": route,
            "tenant": tenant,
            "features": {"x": float(i)},
            "prediction": None if i < errors else 1,
            "probability": None if i < errors else 0.7,
            "latency_ms": 3.0,
            "error_code": "timeout" if i < errors else None,
            "ts": now - 1,
        }
        for i in range(n)
    ]
