"""The model server's pure parts: model ids, loaded-model facts, probe rows, feature refs."""

from __future__ import annotations

import math

import pytest

from raymlp.errors import ValidationError
from raymlp.predictor.artifact import load_predictor
from raymlp.serving.examples import example_features, flaky_mlp, make_artifact, set_control
from raymlp.serving.model_server import ServedModel, parse_model_id


def test_parse_model_id():
    assert parse_model_id("customer-churn:12") == ("customer-churn", 12)
    assert parse_model_id("a:b:3") == ("a:b", 3)
    for bad in ("churn", "churn:", ":3", "churn:x"):
        with pytest.raises(ValidationError):
            parse_model_id(bad)


def test_served_model_labels_probe_and_refs(tmp_path):
    path = make_artifact(
        tmp_path / "a",
        seed=3,
        feature_refs={"tenure_months": "customer_profile:tenure_months", "not_an_input": "v:x"},
    )
    pred = load_predictor(path)
    m = ServedModel.with_refs("churn:1", pred, None, None)
    assert m.lookup == ["customer_profile:tenure_months"]  # refs of real inputs only
    assert m.column_to_input == {"customer_profile__tenure_months": "tenure_months"}
    p = float(pred.predict_proba([m.probe_row()])[0])
    assert math.isfinite(p)
    assert m.label(0.9) == "churn" and m.label(0.1) == "stay"
    override = ServedModel.with_refs(
        "churn:1", pred, None, ["customer_profile:monthly_charges", "usage:calls"]
    )
    assert override.refs == {"monthly_charges": "customer_profile:monthly_charges"}


def test_versions_from_seeds_differ_and_flaky_model_obeys_its_control(tmp_path):
    rows = [example_features(i) for i in range(4)]
    a = load_predictor(make_artifact(tmp_path / "a", seed=1)).predict_proba(rows)
    b = load_predictor(make_artifact(tmp_path / "b", seed=2)).predict_proba(rows)
    assert (a != b).any()
    ctl = tmp_path / "ctl.json"
    set_control(ctl)
    path = make_artifact(
        tmp_path / "f",
        seed=1,
        factory="raymlp.serving.examples:flaky_mlp",
        kwargs={"hidden_dims": [16], "control": str(ctl)},
    )
    pred = load_predictor(path)
    assert (pred.predict_proba(rows) == a).all()  # same seed, same weights
    set_control(ctl, fail=True)
    with pytest.raises(RuntimeError, match="injected"):
        pred.predict_proba(rows)
    assert callable(flaky_mlp)
