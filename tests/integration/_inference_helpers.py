"""Shared set-up of the inference integration tests: churn features and a tiny real model.

The model is a real artifact (the training package's ``save_artifact`` with a fitted
``PreprocessorFitter`` and a ``tabular_mlp``), registered through ``p.registry`` — no training
run needed. Its inputs are short feature names with ``feature_refs`` to the churn views, as a
trained model records them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from raymlp.predictor.artifact import save_artifact
from raymlp.predictor.preprocessing import PreprocessorFitter
from raymlp.training.models import tabular_mlp
from raymlp.training.synthetic import churn_feature_tables

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ["tenure_months", "monthly_charges", "contract_type"]
USAGE = ["calls_last_30d", "support_tickets_90d", "dropped_call_rate"]


def churn_setup(p: Any, n_customers: int = 80, months: int = 2) -> dict[str, pa.Table]:
    """Apply configs/features/churn.yaml and ingest synthetic profile and usage rows."""
    p.features.apply(str(ROOT / "configs/features/churn.yaml"))
    tables = churn_feature_tables(n_customers, months=months, seed=0)
    p.features.ingest("customer_profile", tables["customer_profile"])
    p.features.ingest("customer_usage", tables["customer_usage"])
    return tables


def tiny_model(
    out_dir: Path, tables: dict[str, pa.Table], profile: list[str] = PROFILE, seed: int = 0
) -> tuple[Path, dict[str, str], dict[str, Any]]:
    """A registered-ready artifact over ``profile`` + USAGE features; returns
    ``(directory, {input: "view:feature"}, signature)``."""
    refs = {n: f"customer_profile:{n}" for n in profile}
    refs.update({n: f"customer_usage:{n}" for n in USAGE})
    train = pa.table(
        {
            **{n: tables["customer_profile"].column(n) for n in profile},
            **{n: tables["customer_usage"].column(n) for n in USAGE},
        }
    )
    fitter = PreprocessorFitter(
        list(refs), aliases={ref.replace(":", "__"): n for n, ref in refs.items()}
    )
    fitter.update(train)
    pre = fitter.finish()
    torch.manual_seed(seed)
    kwargs = {"hidden_dims": [8]}
    net = tabular_mlp(pre.output_dim, **kwargs)
    signature = {
        "inputs": [{**i, "nullable": True} for i in pre.signature_inputs()],
        "output": {"name": "churned", "kind": "binary", "labels": ["low_risk", "high_risk"]},
    }
    path = save_artifact(
        out_dir,
        factory="raymlp.training.models:tabular_mlp",
        kwargs=kwargs,
        state_dict=net.state_dict(),
        preprocessor=pre,
        signature=signature,
        spec_extra={"feature_refs": refs, "kind": "test"},
    )
    return path, refs, signature
