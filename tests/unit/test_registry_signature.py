"""Model signatures: checked at registration, then used to validate every request."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from raymlp.errors import ValidationError
from raymlp.registry.lineage import parse_lineage
from raymlp.registry.signature import Signature, parse_signature, validate_request

SIG = {
    "inputs": [
        {"name": "tenure_months", "dtype": "int64"},
        {"name": "monthly_charges", "dtype": "float64"},
        {"name": "plan", "dtype": "string"},
        {"name": "is_senior", "dtype": "bool"},
        {"name": "signup", "dtype": "timestamp", "nullable": True},
        {"name": "age", "dtype": "uint8"},
    ],
    "output": {"name": "churn", "kind": "binary", "labels": ["stay", "churn"]},
}
GOOD = {
    "tenure_months": 24,
    "monthly_charges": 89.99,
    "plan": "pro",
    "is_senior": False,
    "signup": "2024-01-02T03:04:05",
    "age": 40,
}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"inputs": []}, "signature.inputs"),
        ({"inputs": [{"name": "a", "dtype": "int65"}]}, "signature.inputs.0.dtype"),
        (
            {"inputs": [{"name": "a", "dtype": "int64"}, {"name": "a", "dtype": "float64"}]},
            "signature.inputs",
        ),
        ({"inputs": [{"name": "9lives", "dtype": "int64"}]}, "signature.inputs.0.name"),
        ({"inputs": [{"name": "a", "dtype": "int64", "unit": "s"}]}, "signature.inputs.0.unit"),
        ({"output": {"name": "y", "kind": "multiclass", "labels": ["a"]}}, "signature.output"),
        (
            {"output": {"name": "y", "kind": "binary", "labels": ["a", "b", "c"]}},
            "signature.output",
        ),
        ({"output": {"name": "y", "kind": "ranking"}}, "signature.output.kind"),
        ({"output": None}, "signature.output"),
    ],
)
def test_bad_signatures_name_the_field(change, field):
    with pytest.raises(ValidationError) as e:
        parse_signature({**SIG, **change})
    assert e.value.field == field
    assert field in str(e.value)


def test_signature_round_trip():
    sig = parse_signature(SIG)
    assert isinstance(sig, Signature) and sig.feature_names[0] == "tenure_months"
    assert parse_signature(sig.model_dump(mode="json")) == sig
    with pytest.raises(ValidationError):
        parse_signature(["not", "a", "mapping"])


def test_valid_request_is_coerced_in_order():
    out = validate_request(
        SIG, {**GOOD, "tenure_months": 24.0, "monthly_charges": 90, "age": np.uint8(40)}
    )
    assert list(out) == [f["name"] for f in SIG["inputs"]]
    assert out["tenure_months"] == 24 and isinstance(out["tenure_months"], int)
    assert out["monthly_charges"] == 90.0 and isinstance(out["monthly_charges"], float)
    assert out["signup"] == datetime(2024, 1, 2, 3, 4, 5)
    assert validate_request(SIG, {**GOOD, "signup": None})["signup"] is None


@pytest.mark.parametrize(
    "features, field, rule",
    [
        ({k: v for k, v in GOOD.items() if k != "plan"}, "plan", "required"),
        ({**GOOD, "colour": "red"}, "colour", "known feature"),
        ({**GOOD, "tenure_months": "24"}, "tenure_months", "int64"),
        ({**GOOD, "tenure_months": True}, "tenure_months", "int64"),
        ({**GOOD, "tenure_months": 2.5}, "tenure_months", "int64"),
        ({**GOOD, "monthly_charges": "cheap"}, "monthly_charges", "float64"),
        ({**GOOD, "monthly_charges": float("inf")}, "monthly_charges", "finite"),
        ({**GOOD, "monthly_charges": None}, "monthly_charges", "not null"),
        ({**GOOD, "monthly_charges": float("nan")}, "monthly_charges", "not null"),
        ({**GOOD, "plan": 3}, "plan", "string"),
        ({**GOOD, "is_senior": 1}, "is_senior", "bool"),
        ({**GOOD, "signup": "yesterday"}, "signup", "timestamp (ISO-8601)"),
        ({**GOOD, "age": 300}, "age", "uint8 range"),
        ({**GOOD, "age": -1}, "age", "uint8 range"),
    ],
)
def test_bad_requests_name_the_field(features, field, rule):
    with pytest.raises(ValidationError) as e:
        validate_request(SIG, features)
    assert e.value.field == field and e.value.rule == rule
    assert repr(field) in str(e.value)
    assert e.value.http_status == 422


def test_request_must_be_an_object():
    with pytest.raises(ValidationError) as e:
        validate_request(SIG, [1, 2])
    assert e.value.field == "features"


def test_lineage_validation_names_the_field():
    lin = parse_lineage(
        {
            "feature_views": [{"name": "v", "version": 3}],
            "dataset_rows": 10,
            "fallback_model": {"name": "rules", "alias": "production"},
        }
    )
    assert lin.feature_views[0].version == 3
    for bad, field in [
        ({"dataset_rows": -1}, "lineage.dataset_rows"),
        ({"feature_views": [{"name": "v", "version": "x"}]}, "lineage.feature_views.0.version"),
        ({"parent_model": {"name": "m"}}, "lineage.parent_model"),
        ({"parent_model": {"name": "m", "version": 1, "alias": "a"}}, "lineage.parent_model"),
        ({"weights": "x"}, "lineage.weights"),
    ]:
        with pytest.raises(ValidationError) as e:
            parse_lineage(bad)
        assert e.value.field == field
