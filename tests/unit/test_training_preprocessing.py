"""Preprocessing: fitted on train only, saved as JSON, identical in training and serving."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from raymlp.errors import SchemaError, ValidationError
from raymlp.predictor.preprocessing import (
    Preprocessor,
    PreprocessorFitter,
    category_key,
    short_feature_names,
)

COLS = ["tenure", "charges", "plan", "paperless"]


def _train() -> pa.Table:
    return pa.table(
        {
            "tenure": pa.array([1, 5, 9, None, 13], pa.int64()),
            "charges": [10.0, 20.0, 30.0, 40.0, 50.0],
            "plan": ["a", "b", "a", None, "c"],
            "paperless": [True, False, True, True, False],
        }
    )


def _fit(table: pa.Table, **kw) -> Preprocessor:
    f = PreprocessorFitter(COLS, **kw)
    f.update(table)
    return f.finish()


def test_fit_uses_only_the_train_rows():
    pre = _fit(_train())
    spec = {c.name: c for c in pre.columns}
    assert spec["tenure"].mean == pytest.approx(7.0)  # nulls ignored
    assert spec["tenure"].std == pytest.approx(np.std([1, 5, 9, 13]))
    assert spec["charges"].mean == pytest.approx(30.0)
    assert spec["plan"].kind == "onehot" and spec["plan"].categories == ["a", "b", "c"]
    # A test row far outside the train range is scaled with the *train* statistics, and a
    # category unseen in train goes to the unknown slot: nothing about it leaked into the fit.
    x = pre.transform([{"tenure": 1007, "charges": 30.0, "plan": "zzz", "paperless": True}])
    assert x[0, 0] == pytest.approx((1007 - 7.0) / np.std([1, 5, 9, 13]))
    assert x[0, 1] == pytest.approx(0.0)
    assert x[0, 2:6].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_streaming_fit_equals_one_shot_fit():
    rng = np.random.default_rng(0)
    t = pa.table(
        {
            "tenure": rng.integers(0, 100, 1000),
            "charges": rng.normal(50, 10, 1000),
            "plan": rng.choice(["a", "b", "c", "d"], 1000),
            "paperless": rng.random(1000) < 0.5,
        }
    )
    one = _fit(t)
    f = PreprocessorFitter(COLS)
    for off in range(0, 1000, 77):
        f.update(t.slice(off, 77))
    streamed = f.finish()
    for a, b in zip(one.columns, streamed.columns):
        assert a.mean == pytest.approx(b.mean, rel=1e-9) and a.std == pytest.approx(b.std, rel=1e-9)
        assert a.categories == b.categories


def test_train_serve_parity_across_every_input_form():
    pre = _fit(_train())
    table = pa.table(
        {
            "tenure": pa.array([3, None, 40], pa.int64()),
            "charges": [12.5, None, 99.0],
            "plan": pa.array(["b", "zzz", None]),
            "paperless": [False, True, None],
            "ignored": [1, 2, 3],
        }
    )
    rows = table.to_pylist()
    cols = table.to_pydict()
    from_table = pre.transform(table)
    assert np.array_equal(from_table, pre.transform(rows))
    assert np.array_equal(from_table, pre.transform(cols))
    assert np.array_equal(from_table, pre.transform(table.to_batches()[0]))
    assert np.array_equal(from_table[:1], pre.transform(rows[0]))  # one row as a dict
    df = pd.DataFrame({k: v for k, v in cols.items() if k != "plan"})
    df["plan"] = pd.Series(["b", "zzz", None], dtype=object)
    assert np.array_equal(from_table, pre.transform(df))
    # dictionary-encoded strings (what Parquet often yields) take the same path
    dict_table = table.set_column(2, "plan", table.column("plan").dictionary_encode())
    assert np.array_equal(from_table, pre.transform(dict_table))
    # JSON clients send 3.0 for 3: same numbers
    rows_float = [
        {**r, "tenure": float(r["tenure"]) if r["tenure"] is not None else None} for r in rows
    ]
    assert np.array_equal(from_table, pre.transform(rows_float))


def test_json_round_trip_gives_identical_outputs():
    pre = _fit(_train(), encoding="ordinal")
    again = Preprocessor.from_json(pre.to_json())
    rows = _train().to_pylist()
    assert np.array_equal(pre.transform(rows), again.transform(rows))
    assert again.to_dict() == pre.to_dict()


def test_ordinal_encoding_codes_known_categories_from_one():
    pre = _fit(_train(), encoding="ordinal")
    x = pre.transform(
        [
            {"tenure": 1, "charges": 1.0, "plan": p, "paperless": True}
            for p in ("a", "b", "c", "new", None)
        ]
    )
    assert x[:, 2].tolist() == [1.0, 2.0, 3.0, 0.0, 0.0]


def test_max_categories_and_min_count_limit_the_vocabulary():
    t = pa.table(
        {
            "tenure": [1] * 6,
            "charges": [1.0] * 6,
            "plan": ["a", "a", "a", "b", "b", "c"],
            "paperless": [True] * 6,
        }
    )
    assert [c.categories for c in _fit(t, max_categories=2).columns if c.name == "plan"] == [
        ["a", "b"]
    ]
    assert [c.categories for c in _fit(t, min_category_count=2).columns if c.name == "plan"] == [
        ["a", "b"]
    ]


def test_forced_categorical_integer_column_matches_json_values():
    t = pa.table(
        {
            "tenure": [1, 2, 2],
            "charges": [1.0, 2.0, 3.0],
            "plan": ["a", "a", "b"],
            "paperless": [True, True, False],
        }
    )
    pre = _fit(t, categorical=["tenure"])
    spec = {c.name: c for c in pre.columns}
    assert spec["tenure"].kind == "onehot" and spec["tenure"].categories == ["2", "1"]
    assert np.array_equal(pre.transform(t), pre.transform(t.to_pylist()))


def test_missing_feature_and_bad_number_name_the_field():
    pre = _fit(_train())
    with pytest.raises(ValidationError) as e:
        pre.transform([{"tenure": 1, "charges": 2.0, "paperless": True}])
    assert e.value.field == "plan"
    with pytest.raises(ValidationError) as e:
        pre.transform([{"tenure": "abc", "charges": 2.0, "plan": "a", "paperless": True}])
    assert e.value.field == "tenure"


def test_aliases_accept_feature_store_names():
    f = PreprocessorFitter(
        ["tenure_months"], aliases={"customer_profile__tenure_months": "tenure_months"}
    )
    f.update(pa.table({"tenure_months": [1, 2, 3]}))
    pre = f.finish()
    assert np.array_equal(
        pre.transform({"tenure_months": [2]}),
        pre.transform({"customer_profile__tenure_months": [2]}),
    )


def test_short_feature_names_only_when_unambiguous():
    got = short_feature_names(["p__tenure", "p__plan", "u__plan", "x"])
    assert got == {"p__tenure": "tenure"}


def test_empty_train_split_and_unsupported_types_are_errors():
    with pytest.raises(ValidationError) as e:
        PreprocessorFitter(["x"]).finish()
    assert e.value.field == "dataset"
    f = PreprocessorFitter(["x"])
    with pytest.raises(SchemaError):
        f.update(pa.table({"x": pa.array([[1], [2]])}))


def test_category_key_is_canonical():
    assert category_key(True) == "true" and category_key(2.0) == "2"
    assert category_key(2) == "2" and category_key(None) is None
    assert category_key(float("nan")) is None and category_key(2.5) == "2.5"
    assert not math.isnan(_fit(_train()).transform(_train()).sum())
