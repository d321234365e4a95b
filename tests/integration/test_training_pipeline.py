"""The training job end to end on a live platform: feature store → Tune × Train + DeepSpeed →
registry (model + fallback, lineage, metrics, profile) → promotion gate. A worse model is never
promoted."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from raymlp.config import PlatformConfig, load_train_config
from raymlp.errors import NotFoundError
from raymlp.predictor.artifact import load_predictor
from raymlp.training.pipeline import run_training_job
from raymlp.training.synthetic import churn_feature_tables
from raymlp.training.tuning import apply_overrides

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


class ConstantLogit(nn.Module):
    """A user-supplied model that ignores its inputs: it can only learn the base rate."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0]) + 0.0 * x.sum(dim=1)


def constant_logit(input_dim: int) -> nn.Module:
    """Model factory by import path (a user's own ``nn.Module``)."""
    return ConstantLogit(input_dim)


@pytest.fixture
def platform_config(tmp_path) -> PlatformConfig:
    """This test's own model factory lives under ``tests``: allowed like a user's package."""
    return PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "registry": {"model_factory_modules": ["raymlp", "torch.nn", "tests"]},
        }
    )


@pytest.fixture
def churn_platform(platform, tmp_path):
    tables = churn_feature_tables(1200, months=2, seed=5)
    for name, table in tables.items():
        pq.write_table(table, tmp_path / f"{name}.parquet")
    platform.features.apply(str(REPO / "configs/features/churn.yaml"))
    for view in ("customer_profile", "customer_usage"):
        platform.features.ingest(view, str(tmp_path / f"{view}.parquet"))
    return platform, str(tmp_path / "labels.parquet")


def test_train_register_and_gate(churn_platform):
    p, labels = churn_platform
    base = load_train_config(REPO / "configs/train/churn.yaml")
    cfg = apply_overrides(
        base,
        {
            "dataset.entity_table": labels,
            "training.epochs": 2,
            "scaling.num_workers": 1,
            "tune.num_samples": 2,
            "tune.search_space": {"optimizer.lr": {"choice": [0.003, 0.01]}},
            "tune.asha.grace_period": 1,
        },
    )
    said: list[str] = []
    r1 = run_training_job(p, cfg, say=said.append)
    reg = p.registry
    name = "customer-churn"

    # -- registered: model + fallback, with lineage, metrics, signature, profile, card --------
    assert r1.version == 1 and r1.fallback_version == 1
    v1 = reg.get(name, version=1)
    assert v1.metrics["test_auc"] == pytest.approx(r1.test_metrics["auc"])
    assert r1.test_metrics["auc"] > 0.65 and r1.fallback_metrics["auc"] > 0.6
    assert {"test_log_loss", "test_ece", "test_brier", "test_accuracy"} <= set(v1.metrics)
    versions = p.features.table_versions(["customer_profile", "customer_usage"])
    lineage = v1.lineage
    assert {fv["name"]: fv["version"] for fv in lineage["feature_views"]} == versions
    fallback = lineage["fallback_model"]
    assert (fallback["name"], fallback["version"]) == (f"{name}-fallback", 1)
    assert lineage["dataset_rows"] == sum(r1.rows.values()) == 2400
    assert lineage["run_id"] == r1.run_id
    inputs = [i["name"] for i in v1.signature["inputs"]]
    assert "tenure_months" in inputs and "dropped_call_rate" in inputs  # short names
    assert v1.signature["output"]["labels"] == ["low_risk", "high_risk"]
    art = Path(v1.artifact_uri)
    profile = json.loads((art / "reference_profile.json").read_text())
    assert set(profile["features"]) == set(inputs) and "prediction" in profile
    assert profile["features"]["contract_type"]["kind"] == "categorical"
    assert "Model card: customer-churn" in v1.card and "fallback" in v1.card.lower()
    assert r1.int8 is not None and abs(r1.int8["auc_delta"]) < 0.05
    pred = load_predictor(art, variant="int8")
    row = {
        "tenure_months": 2,
        "monthly_charges": 99.0,
        "total_charges": 198.0,
        "contract_type": "month-to-month",
        "paperless_billing": True,
        "num_products": 1,
        "calls_last_30d": 40,
        "data_gb_last_30d": 3.0,
        "support_tickets_90d": 3,
        "dropped_call_rate": 0.05,
    }
    assert 0.0 <= float(pred.predict_proba([row])[0]) <= 1.0
    fb = reg.get(f"{name}-fallback", version=1)
    assert load_predictor(fb.artifact_uri).spec["factory"].endswith(":logistic_regression")

    # -- every trial is a tracked run under the job's run ------------------------------------
    assert len(r1.trials) == 2
    parent = reg.get_run(r1.run_id)
    assert parent["status"] == "FINISHED" and len(parent.get("children", [])) >= 2

    # -- the gate: first model → a promotion *request*; approval by someone else moves it ----
    assert r1.gate["request"] is True and r1.promotion["status"] == "pending"
    with pytest.raises(NotFoundError):
        reg.get(name, alias="production")  # requested, not promoted: approvals are not bypassed
    approver = p.as_principal(principal="approver-1").registry
    approver.approve(r1.promotion["request_id"])
    assert reg.get(name, alias="production").version == 1

    # -- a worse model (a user factory that ignores its inputs) is never promoted ------------
    worse = apply_overrides(
        cfg,
        {
            "model.factory": "tests.integration.test_training_pipeline:constant_logit",
            "model.kwargs": {},
            "tune.search_space": {},
            "tune.num_samples": 1,
            "training.epochs": 1,
            "fallback.enabled": False,
            "quantize.enabled": False,
        },
    )
    r2 = run_training_job(p, worse, say=said.append)
    assert r2.version == 2 and r2.fallback_version is None
    assert r2.test_metrics["auc"] == pytest.approx(0.5)  # constant scores: all ties
    assert r2.gate["request"] is False and r2.promotion is None
    assert r2.gate["current_version"] == 1 and r2.gate["delta"] < 0
    assert "does not beat production" in r2.gate["reason"]
    assert reg.get(name, alias="production").version == 1
    assert not [q for q in reg.requests(name) if q["version"] == 2]
    assert any("gate:" in line for line in said)
