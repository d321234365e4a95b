"""Feature value types and their Arrow spelling, plus the cast rules ingestion accepts.

Every Delta table of a feature view has one canonical Arrow schema::

    <join keys...>, <timestamp_field> timestamp[us, UTC], _seq int64, <features...>

``_seq`` is the ingestion sequence: a number that grows with every row written, so that two rows
with the same key and the same event time are ordered by "written last wins".
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.types as pat

__all__ = [
    "SEQ_COLUMN",
    "TS_TYPE",
    "arrow_type",
    "cast_rule",
    "output_column",
]

#: Internal column holding the ingestion sequence number of each row.
SEQ_COLUMN = "_seq"

#: The one timestamp type stored: microseconds, UTC.
TS_TYPE = pa.timestamp("us", tz="UTC")

_ARROW = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": TS_TYPE,
}


def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type stored for a feature dtype (``"int64"`` -> ``pa.int64()``)."""
    return _ARROW[dtype]


def output_column(view: str, feature: str) -> str:
    """Name of a retrieved feature's column: ``customer_profile__tenure_months``."""
    return f"{view}__{feature}"


def _is_string(t: pa.DataType) -> bool:
    if pat.is_dictionary(t):
        return _is_string(t.value_type)
    return pat.is_string(t) or pat.is_large_string(t) or pat.is_string_view(t)


def cast_rule(src: pa.DataType, dtype: str) -> str | None:
    """Why ``src`` cannot be stored as ``dtype`` (None when it can, losslessly or by widening).

    Accepted: the same type; narrower integers into wider ones; integers and float32 into
    float64; float64 into float32 (the declared precision wins); any string spelling (large,
    view, dictionary-encoded) into string; a timezone-aware timestamp of any unit into
    timestamp; and an all-null column into anything.
    """
    if pat.is_null(src):
        return None
    if dtype == "timestamp":
        if pat.is_timestamp(src):
            return None if src.tz else "timestamp without timezone (rule: timezone-aware, e.g. UTC)"
        return f"expected a timezone-aware timestamp, got {src}"
    if dtype == "string":
        return None if _is_string(src) else f"expected string, got {src}"
    if dtype == "bool":
        return None if pat.is_boolean(src) else f"expected bool, got {src}"
    if dtype in ("int32", "int64"):
        bits = 32 if dtype == "int32" else 64
        if pat.is_signed_integer(src) and src.bit_width <= bits:
            return None
        if pat.is_unsigned_integer(src) and src.bit_width < bits:
            return None
        return f"expected {dtype}, got {src} (rule: integers that fit in {dtype})"
    if dtype in ("float32", "float64"):
        if pat.is_floating(src) or pat.is_integer(src):
            return None
        return f"expected {dtype}, got {src} (rule: a number)"
    return f"unknown dtype {dtype!r}"
