"""The customer-churn walkthrough's stages, shared by ``raymlp demo`` and ``jobs.quickstart``.

Each stage acts on a connected :class:`~raymlp.client.Platform` and reports through ``say``;
the demo brings its own embedded platform, the quickstart job joins the running one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL",
    "REPO_CONFIGS",
    "EXAMPLE_FEATURES",
    "write_churn_data",
    "load_churn_features",
    "train_churn",
    "curl_lines",
]

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODEL = "customer-churn"
VIEWS = ("customer_profile", "customer_usage")

#: A by-features request body: a new, expensive month-to-month customer with support trouble.
EXAMPLE_FEATURES: dict[str, Any] = {
    "tenure_months": 3, "monthly_charges": 99.5, "total_charges": 298.5,
    "contract_type": "month-to-month", "paperless_billing": True, "num_products": 1,
    "calls_last_30d": 12, "data_gb_last_30d": 2.5, "support_tickets_90d": 4,
    "dropped_call_rate": 0.09,
}

Say = Callable[[str], None]


def write_churn_data(
    p: Any, customers: int, months: int, *, prefix: str, seed: int = 7, say: Say = print
) -> dict[str, Any]:
    """Generate the synthetic churn tables and write them as Parquet under the storage root
    (``<root>/<prefix>/<name>.parquet``), so every node of the cluster can read them.

    Returns ``{name: {"uri": ..., "rows": ..., "ids": first customer ids}}`` for
    ``customer_profile``, ``customer_usage`` and ``labels``.
    """
    import pyarrow.parquet as pq

    from raymlp.training.synthetic import churn_feature_tables

    # Anchored at now: the newest rows are inside the views' TTLs, so entity requests are
    # answered from real online features.
    tables = churn_feature_tables(customers, months=months, seed=seed, now=datetime.now(UTC))
    out: dict[str, Any] = {}
    for name, table in tables.items():
        buf = io.BytesIO()
        pq.write_table(table, buf)
        rel = f"{prefix}/{name}.parquet"
        p.storage.write_bytes(rel, buf.getvalue())
        ids = list(dict.fromkeys(table.column("customer_id").to_pylist()))
        out[name] = {"uri": p.storage.uri(rel), "rows": table.num_rows, "ids": ids}
        say(f"{name}: {table.num_rows} rows -> {out[name]['uri']}")
    return out


def load_churn_features(p: Any, data: dict[str, Any], *, say: Say = print) -> None:
    """Apply ``configs/features/churn.yaml``, ingest both views, materialize the online store."""
    for change in p.features.apply(REPO_CONFIGS / "features" / "churn.yaml"):
        say(f"{change['kind']} {change['name']}: {change['action']}")
    for view in VIEWS:
        version = p.features.ingest(view, data[view]["uri"])
        say(f"{view}: Delta version {version}")
    for m in p.features.materialize():
        say(f"online {m['view']}: {m['rows_upserted']} entities")


def train_churn(
    p: Any, entity_table: str, overrides: dict[str, Any] | None = None, *, say: Say = print
) -> Any:
    """``configs/train/churn.yaml`` on ``entity_table`` (plus overrides): Tune x Train +
    DeepSpeed, registry, fallback and promotion gate. Returns the TrainJobResult."""
    from raymlp.config import load_train_config
    from raymlp.training.pipeline import run_training_job
    from raymlp.training.tuning import apply_overrides

    cfg = load_train_config(REPO_CONFIGS / "train" / "churn.yaml")
    cfg = apply_overrides(cfg, {"dataset.entity_table": entity_table, **(overrides or {})},
                          source="churn example")
    return run_training_job(p, cfg, say=say)


def curl_lines(url: str, customer_id: str, api_key: str | None = None) -> list[str]:
    """Ready-to-paste ``curl`` lines: by entity, by features, the model list. ``api_key`` may
    be a shell variable (``"$RAYMLP_API_KEY"``), quoted so that the shell expands it."""
    quote = '"' if api_key and api_key.startswith("$") else "'"
    key = f" -H {quote}X-API-Key: {api_key}{quote}" if api_key else ""
    post = f"curl -s -X POST {url}/v1/predictions{key} -H 'Content-Type: application/json'"
    by_entity = {"model_id": MODEL, "entity": {"customer_id": customer_id}}
    by_features = {"model_id": MODEL, "features": EXAMPLE_FEATURES}
    return [
        f"{post} -d '{json.dumps(by_entity)}'",
        f"{post} -d '{json.dumps(by_features)}'",
        f"curl -s {url}/v1/models{key}",
    ]
