"""Shared pieces of the feature-store security tests: a platform with auth on and two tenants
(``default``: alice, a developer; ``acme``: carol, a developer), a viewer, an admin service
principal, and small feature definitions owned by alice's tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from raymlp.client import Platform
from raymlp.config import PlatformConfig, hash_api_key

KEYS = {"alice": "alice-key", "carol": "carol-key", "viewer": "viewer-key"}
NOW = datetime.now(UTC).replace(microsecond=0)


def auth_config(root: str, **feature_store: Any) -> PlatformConfig:
    return PlatformConfig.model_validate(
        {
            "storage": {"root": root},
            "feature_store": feature_store,
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
                    {"name": "ops", "roles": ["admin"]},
                ],
                "default_principal": "ops",
            },
        }
    )


def as_(platform: Platform, who: str) -> Platform:
    return platform.as_principal(api_key=KEYS[who])


#: alice's tenant's definitions: an entity, a view and an on-demand view on it.
REPO = {
    "entities": [{"name": "customer", "join_keys": ["customer_id"]}],
    "feature_views": [
        {
            "name": "usage",
            "entities": ["customer"],
            "ttl": "30d",
            "schema": [
                {"name": "calls", "dtype": "int64"},
                {"name": "minutes", "dtype": "float64"},
            ],
        }
    ],
    "on_demand_feature_views": [
        {
            "name": "usage_ratio",
            "sources": ["usage:calls", "usage:minutes"],
            "udf": "tests.security._features:ratio",
            "schema": [{"name": "per_call", "dtype": "float64"}],
        }
    ],
}


def ratio(data: dict[str, Any]) -> dict[str, Any]:
    """The on-demand view's function: minutes per call."""
    return {"per_call": data["usage__minutes"] / data["usage__calls"].clip(1)}


def usage_rows(rows: list[tuple[str, float, int, float]]) -> pa.Table:
    """``(customer_id, days ago, calls, minutes)`` rows of the ``usage`` view."""
    return pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "event_timestamp": pa.array(
                [NOW - timedelta(days=r[1]) for r in rows], pa.timestamp("us", tz="UTC")
            ),
            "calls": pa.array([r[2] for r in rows], pa.int64()),
            "minutes": pa.array([r[3] for r in rows], pa.float64()),
        }
    )


def parquet_files(platform: Platform, view: str) -> list[str]:
    return sorted(n for n in platform.storage.listdir("features", view) if n.endswith(".parquet"))


def online(platform: Platform, ids: list[str], feats: list[str] | None = None) -> list[Any]:
    rows = platform.features.get_online_features(
        [{"customer_id": i} for i in ids], feats or ["usage:calls"]
    )
    return [(r["customer_id"], r.get("usage__calls"), r["_status"]["usage__calls"]) for r in rows]
