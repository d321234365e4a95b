"""The model artifact: save, load as a Predictor (fp32 and int8), profile and card."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from raymlp.errors import NotFoundError, ValidationError
from raymlp.predictor.artifact import load_predictor, quantize_int8, read_json, save_artifact
from raymlp.predictor.factory import build_model, resolve_factory
from raymlp.predictor.preprocessing import PreprocessorFitter
from raymlp.training.card import CardFacts, render_card
from raymlp.training.models import count_params
from raymlp.training.profile import bin_index, build_profile
from raymlp.training.synthetic import CHURN_FEATURES, churn_table

SIGNATURE = {
    "inputs": [{"name": n, "dtype": "float64"} for n in CHURN_FEATURES],
    "output": {"name": "churned", "kind": "binary", "labels": ["stay", "churn"]},
}


@pytest.fixture
def artifact(tmp_path):
    table = churn_table(300, seed=1)
    fitter = PreprocessorFitter(list(CHURN_FEATURES))
    fitter.update(table)
    pre = fitter.finish()
    torch.manual_seed(0)
    net = build_model("raymlp.training.models:tabular_mlp", pre.output_dim, {"hidden_dims": [8]})
    int8 = quantize_int8(
        build_model("raymlp.training.models:tabular_mlp", pre.output_dim, {"hidden_dims": [8]})
    )
    int8.load_state_dict(quantize_int8(net).state_dict())
    out = save_artifact(
        tmp_path / "model",
        factory="raymlp.training.models:tabular_mlp",
        kwargs={"hidden_dims": [8]},
        state_dict=net.state_dict(),
        preprocessor=pre,
        signature=SIGNATURE,
        metrics={"auc": 0.7, "nan": float("nan")},
        card="# card",
        int8_state_dict=int8.state_dict(),
        spec_extra={"feature_refs": {"tenure_months": "p:tenure_months"}},
    )
    return out, table, net, pre


def test_round_trip_predicts_like_the_trained_network(artifact):
    path, table, net, pre = artifact
    pred = load_predictor(path)
    expected = torch.sigmoid(net(torch.from_numpy(pre.transform(table)))).detach().numpy()
    got = pred.predict_proba(table)
    assert got.dtype == np.float64 and got.shape == (table.num_rows,)
    assert np.allclose(got, expected, atol=1e-6)
    assert np.array_equal(got, pred.predict_proba(table.to_pylist()))  # rows == table
    labels = pred.predict(table.slice(0, 5))
    assert set(labels) <= {"stay", "churn"}
    assert labels == ["churn" if p >= 0.5 else "stay" for p in got[:5]]
    assert pred.predict_proba([]).shape == (0,)


def test_int8_variant_is_close_to_fp32(artifact):
    path, table, _, _ = artifact
    fp32 = load_predictor(path).predict_proba(table)
    int8 = load_predictor(path, variant="int8")
    assert int8.variant == "int8"
    assert np.max(np.abs(int8.predict_proba(table) - fp32)) < 0.05


def test_every_file_is_strict_json_and_readable(artifact):
    path = artifact[0]
    for name in ("spec", "signature", "profile", "metrics"):
        json.loads(
            (
                path
                / {
                    "spec": "model.json",
                    "signature": "signature.json",
                    "profile": "reference_profile.json",
                    "metrics": "metrics.json",
                }[name]
            ).read_text()
        )
    assert read_json(path, "metrics") == {"auc": 0.7, "nan": None}
    spec = read_json(path, "spec")
    assert spec["variants"] == {"fp32": "weights.pt", "int8": "weights_int8.pt"}
    assert spec["feature_refs"] == {"tenure_months": "p:tenure_months"}
    assert (path / "card.md").read_text() == "# card"


def test_missing_inputs_unknown_variant_and_non_artifacts(artifact, tmp_path):
    path = artifact[0]
    pred = load_predictor(path)
    with pytest.raises(ValidationError) as e:
        pred.predict_proba([{"tenure_months": 1}])
    assert e.value.field == "monthly_charges"
    with pytest.raises(NotFoundError):
        load_predictor(path, variant="fp16")
    with pytest.raises(NotFoundError):
        load_predictor(tmp_path / "nothing-here")


def test_profile_covers_numeric_categorical_and_predictions():
    t = pa.table({"x": [1.0, 2.0, 3.0, 4.0, None], "c": ["a", "a", "b", None, "a"]})
    prof = build_profile(
        t,
        {"x": "numeric", "c": "categorical"},
        predictions=np.array([0.1, 0.5, 0.95]),
        labels=np.array([0, 1, 1]),
        total_rows=50,
    )
    x = prof["features"]["x"]
    assert x["missing_rate"] == pytest.approx(0.2) and x["min"] == 1.0 and x["max"] == 4.0
    assert len(x["percentiles"]) == 101
    assert sum(x["histogram"]["fractions"]) == pytest.approx(1.0)
    c = prof["features"]["c"]
    assert c["frequencies"] == {"a": 0.75, "b": 0.25} and c["missing_rate"] == pytest.approx(0.2)
    assert prof["prediction"]["histogram"]["edges"][0] == 0.0
    assert prof["label"]["positive_rate"] == pytest.approx(2 / 3) and prof["rows"] == 50
    assert bin_index([0, 1, 2, 3], np.array([-5, 0, 1, 2.5, 9])).tolist() == [0, 0, 1, 2, 2]


def test_model_factory_by_import_path():
    assert count_params(build_model("raymlp.training.models:logistic_regression", 5)) == 6
    with pytest.raises(ValueError):
        resolve_factory("raymlp.training.models:nope")
    with pytest.raises(ModuleNotFoundError):
        resolve_factory("no_such_module:f")


def test_card_mentions_metrics_fallback_and_int8():
    text = render_card(
        CardFacts(
            model_name="customer-churn",
            kind="primary",
            label="churned",
            class_names=["stay", "churn"],
            inputs=SIGNATURE["inputs"],
            entity_table="l.parquet",
            feature_versions={"customer_profile": 3},
            rows={"train": 70, "test": 15},
            positive_rate={"train": 0.3, "test": 0.2},
            split={"seed": 42},
            test_metrics={
                "auc": 0.81,
                "calibration": [
                    {"bin": [0.0, 0.1], "count": 3, "mean_predicted": 0.05, "observed_rate": 0.0}
                ],
            },
            int8={"auc_delta": -0.001, "accuracy_delta": 0.0, "recommended": True},
            fallback={"name": "customer-churn-fallback", "version": 2, "auc": 0.7},
        )
    )
    assert "0.8100" in text and "`customer_profile`@3" in text
    assert "customer-churn-fallback" in text and "INT8" in text
