"""Property tests (Hypothesis) of the HTTP request validator: the body guard's number rules
(:mod:`raymlp.serving.limits`), the request schema with its error mapping
(:mod:`raymlp.serving.api`), and the signature check (``validate_request``) behind them.

Whatever a client sends, the answer is either accepted values of the declared types or one
raymlp error naming a field — never another exception (which the gateway would answer 503).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raymlp.errors import BadRequestError, RayMLPError, ValidationError
from raymlp.registry.signature import validate_request
from raymlp.serving.api import request_error
from raymlp.serving.errors import error_body
from raymlp.serving.examples import FEATURES
from raymlp.serving.limits import check_json_body, find_non_finite, parse_json_strict
from raymlp.serving.schemas import BatchPredictionRequest, PredictionRequest

SIG = {
    "inputs": [{"name": n, "dtype": d} for n, d in FEATURES],
    "output": {"name": "churn", "kind": "binary", "labels": ["stay", "churn"]},
}
NAMES = [n for n, _ in FEATURES]

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON scalars a client can write, the awkward ones included (NaN/Infinity are literals that
# Python's json module writes and reads; 10**400 is a legal JSON integer).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "NaN", "1e400", "2024-01-01T00:00:00", "month-to-month"]),
)
json_docs = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=20,
)
# What survives the body guard: finite floats and integers a float64 can hold.
safe_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


def _paths(doc: Any, prefix: str = "") -> set[str]:
    out = {prefix or "body"}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out |= _paths(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out |= _paths(v, f"{prefix}.{i}" if prefix else str(i))
    return out


def _finite(doc: Any) -> bool:
    if isinstance(doc, dict):
        return all(_finite(v) for v in doc.values())
    if isinstance(doc, list):
        return all(_finite(v) for v in doc)
    if isinstance(doc, bool) or not isinstance(doc, int | float):
        return True
    try:
        return math.isfinite(float(doc))  # an int that rounds to float64 is finite
    except OverflowError:
        return False


@PROPS
@given(json_docs)
def test_the_body_guard_refuses_exactly_the_non_finite_numbers_and_names_their_field(doc):
    raw = json.dumps(doc).encode()  # writes NaN / Infinity literals for non-finite floats
    err = check_json_body(raw)
    if _finite(doc):
        assert err is None
        return
    assert isinstance(err, ValidationError) and err.http_status == 422
    assert err.context["field"] in _paths(doc)
    assert err.context["rule"] == "finite number"
    # the named field really holds the offender
    assert find_non_finite(parse_json_strict(raw))[0] == err.context["field"]


@PROPS
@given(st.dictionaries(st.text(max_size=12), json_docs, max_size=6))
def test_any_prediction_body_is_accepted_or_one_contract_error(body):
    try:
        PredictionRequest.model_validate(body)
    except pydantic.ValidationError as e:
        err = request_error(list(e.errors()))
        assert isinstance(err, ValidationError | BadRequestError)
        status, payload = error_body(err)
        assert status in (400, 422) and set(payload["error"]) == {"code", "message", "details"}
        if status == 422:
            assert payload["error"]["details"]["field"]


@PROPS
@given(st.dictionaries(st.sampled_from([*NAMES, "extra", ""]), safe_scalars, max_size=6))
def test_validate_request_returns_typed_values_or_a_validation_error_naming_a_field(features):
    try:
        out = validate_request(SIG, features)
    except ValidationError as e:
        assert e.context["field"] in set(features) | set(NAMES)
        return
    except RayMLPError as e:  # pragma: no cover - a different raymlp error is a bug too
        raise AssertionError(f"unexpected {e!r}") from e
    assert list(out) == NAMES
    for name, dtype in FEATURES:
        v = out[name]
        if dtype == "int64":
            assert type(v) is int and -(2**63) <= v < 2**63
        elif dtype == "float64":
            assert type(v) is float and math.isfinite(v)
        else:
            assert type(v) is str


@PROPS
@given(
    st.integers(0, 10_000),
    st.floats(0, 1e6, allow_nan=False),
    st.sampled_from(["month-to-month", "one-year", "two-year"]),
    st.integers(0, 100),
    st.randoms(use_true_random=False),
)
def test_validate_request_accepts_valid_rows_in_any_key_order(
    tenure, charges, contract, calls, rnd
):
    row = {
        "tenure_months": tenure,
        "monthly_charges": charges,
        "contract": contract,
        "support_calls": calls,
    }
    keys = list(row)
    rnd.shuffle(keys)
    shuffled = {k: row[k] for k in keys}
    assert validate_request(SIG, shuffled) == validate_request(SIG, row) == row
    # JSON clients send 24.0 for 24: the same answer
    assert validate_request(SIG, {**row, "tenure_months": float(tenure)}) == row


@PROPS
@given(
    st.lists(st.dictionaries(st.sampled_from(["features", "entity", "x"]), json_docs), max_size=5)
)
def test_any_batch_body_is_accepted_or_one_contract_error(instances):
    try:
        BatchPredictionRequest.model_validate({"model_id": "m", "instances": instances})
    except pydantic.ValidationError as e:
        status, _ = error_body(request_error(list(e.errors())))
        assert status in (400, 422)
