"""Ingestion validation: each rejection names view, column and rule; accepted casts work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from raymlp.config import FeatureField, FeatureView
from raymlp.errors import SchemaError, ValidationError
from raymlp.features.dtypes import TS_TYPE, cast_rule
from raymlp.features.validation import conform

VIEW = FeatureView(
    name="profile",
    entities=["customer"],
    ttl="30d",
    features=[
        FeatureField(name="tenure", dtype="int64"),
        FeatureField(name="charges", dtype="float32"),
        FeatureField(name="plan", dtype="string"),
        FeatureField(name="paperless", dtype="bool"),
    ],
)
KEYS = [("customer_id", "string")]
NOW = datetime(2024, 5, 1, tzinfo=UTC)


def table(**overrides) -> pa.Table:
    cols = {
        "customer_id": pa.array(["a", "b"]),
        "event_timestamp": pa.array([NOW, NOW], pa.timestamp("ms", tz="Europe/Paris")),
        "tenure": pa.array([1, 2], pa.int16()),
        "charges": pa.array([1.5, 2.5], pa.float64()),
        "plan": pa.array(["x", "y"]).dictionary_encode(),
        "paperless": pa.array([True, None]),
        "extra": pa.array([0, 0]),
    }
    cols.update(overrides)
    return pa.table({k: v for k, v in cols.items() if v is not None})


def test_conform_casts_to_the_stored_schema_and_drops_extra_columns():
    out = conform(table(), VIEW, KEYS)
    assert out.column_names == [
        "customer_id",
        "event_timestamp",
        "tenure",
        "charges",
        "plan",
        "paperless",
    ]
    assert out.schema.field("event_timestamp").type == TS_TYPE
    assert out.schema.field("tenure").type == pa.int64()
    assert out.schema.field("charges").type == pa.float32()
    assert out.column("plan").to_pylist() == ["x", "y"]
    assert out.column("event_timestamp")[0].as_py() == NOW


@pytest.mark.parametrize(
    ("overrides", "column", "rule"),
    [
        ({"tenure": None}, "tenure", "missing column"),
        ({"customer_id": None}, "customer_id", "missing column"),
        ({"tenure": pa.array([1.0, 2.0])}, "tenure", "wrong dtype"),
        ({"tenure": pa.array([1, 2], pa.uint64())}, "tenure", "wrong dtype"),
        ({"plan": pa.array([1, 2])}, "plan", "wrong dtype"),
        (
            {"event_timestamp": pa.array([NOW.replace(tzinfo=None)] * 2)},
            "event_timestamp",
            "timestamp without timezone",
        ),
        (
            {"event_timestamp": pa.array(["2024-01-01", "2024-01-02"])},
            "event_timestamp",
            "wrong dtype",
        ),
        ({"customer_id": pa.array(["a", None])}, "customer_id", "null join key"),
        ({"event_timestamp": pa.array([NOW, None], TS_TYPE)}, "event_timestamp", "null timestamp"),
    ],
)
def test_rejections_name_view_column_and_rule(overrides, column, rule):
    with pytest.raises(SchemaError) as info:
        conform(table(**overrides), VIEW, KEYS)
    err = info.value
    assert (err.view, err.column, err.rule) == ("profile", column, rule)
    assert "profile" in str(err) and column in str(err)


def test_null_feature_values_and_all_null_columns_are_accepted():
    out = conform(table(charges=pa.nulls(2)), VIEW, KEYS)
    assert out.column("charges").null_count == 2


@pytest.mark.parametrize(
    ("src", "dtype", "ok"),
    [
        (pa.int32(), "int64", True),
        (pa.int64(), "int32", False),
        (pa.uint32(), "int64", True),
        (pa.int64(), "float64", True),
        (pa.float64(), "float32", True),
        (pa.large_string(), "string", True),
        (pa.bool_(), "int64", False),
        (pa.timestamp("s", tz="UTC"), "timestamp", True),
        (pa.timestamp("s"), "timestamp", False),
        (pa.null(), "bool", True),
    ],
)
def test_cast_rules(src, dtype, ok):
    assert (cast_rule(src, dtype) is None) is ok


NOW_US = int(NOW.timestamp() * 1_000_000)
SKEW = timedelta(minutes=5)


def test_event_times_beyond_the_clock_skew_are_refused_naming_field_value_and_rule():
    late = datetime(2100, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError) as info:
        conform(
            table(event_timestamp=pa.array([NOW, late], TS_TYPE)),
            VIEW,
            KEYS,
            max_future_skew=SKEW,
            now_us=NOW_US,
        )
    err = info.value
    assert (err.field, err.rule, err.row) == (
        "event_timestamp",
        "event time <= now + max_future_skew",
        1,
    )
    assert err.value.startswith("2100-01-01") and "max_future_skew" in str(err)


def test_event_times_within_the_skew_pass_and_no_bound_without_a_skew():
    inside = NOW + SKEW
    ok = table(event_timestamp=pa.array([NOW, inside], TS_TYPE))
    assert conform(ok, VIEW, KEYS, max_future_skew=SKEW, now_us=NOW_US).num_rows == 2
    just_over = table(event_timestamp=pa.array([inside + timedelta(milliseconds=1)] * 2, TS_TYPE))
    with pytest.raises(ValidationError):
        conform(just_over, VIEW, KEYS, max_future_skew=SKEW, now_us=NOW_US)
    assert conform(just_over, VIEW, KEYS).num_rows == 2  # no skew given: not checked


@pytest.mark.parametrize(
    "values",
    [
        [1.0, float("nan")],
        [float("inf"), 1.0],
        [1.0, float("-inf")],
        [1.0, 1e300],  # overflows float32 when stored
    ],
)
def test_non_finite_float_features_are_refused_naming_the_field(values):
    with pytest.raises(ValidationError) as info:
        conform(table(charges=pa.array(values, pa.float64())), VIEW, KEYS)
    err = info.value
    assert err.field == "charges" and err.rule == "finite float32" and err.view == "profile"
