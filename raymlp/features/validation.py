"""Check a dataset against a feature view's schema and bring it to the stored form.

Rejections raise :class:`~raymlp.errors.SchemaError` naming the view, the column and the rule:

- a declared column (join key, timestamp field, feature) is missing;
- a column's type cannot be stored as the declared dtype (see :func:`~.dtypes.cast_rule`);
- the timestamp has no timezone;
- a join key or the timestamp is null.

and :class:`~raymlp.errors.ValidationError` naming the field, the value and the rule:

- a float feature holds NaN or an infinity (or a value that overflows float32 when stored);
- an event timestamp lies more than ``max_future_skew`` ahead of the clock (a row dated 2100
  would otherwise be "the newest" for that entity forever).

Extra columns are ignored. Example::

    table = conform(table, view, keys=[("customer_id", "string")],
                    max_future_skew=timedelta(minutes=5))
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from raymlp.config import FeatureView
from raymlp.errors import SchemaError, ValidationError
from raymlp.features.dtypes import TS_TYPE, arrow_type, cast_rule

__all__ = [
    "declared_columns",
    "check_schema",
    "check_nulls",
    "check_finite",
    "check_event_times",
    "conform",
]


def declared_columns(view: FeatureView, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``[(column, dtype)]`` of the data a view takes: keys, timestamp, features."""
    return [*keys, (view.timestamp_field, "timestamp"), *((f.name, f.dtype) for f in view.features)]


def check_schema(schema: pa.Schema, view: FeatureView, keys: list[tuple[str, str]]) -> None:
    """Columns and types only (no data is read): raises SchemaError on the first problem."""
    names = set(schema.names)
    for col, dtype in declared_columns(view, keys):
        if col not in names:
            role = _role(view, keys, col)
            raise SchemaError(
                f"view {view.name!r}: {role} column {col!r} is missing "
                f"(rule: every declared column is present; got {sorted(names)})",
                view=view.name,
                column=col,
                rule="missing column",
            )
        why = cast_rule(schema.field(col).type, dtype)
        if why is not None:
            rule = "timestamp without timezone" if "without timezone" in why else "wrong dtype"
            raise SchemaError(
                f"view {view.name!r}: column {col!r}: {why}",
                view=view.name,
                column=col,
                rule=rule,
                dtype=dtype,
                got=str(schema.field(col).type),
            )


def check_nulls(table: pa.Table, view: FeatureView, keys: list[tuple[str, str]]) -> None:
    """Join keys and the timestamp must be non-null in every row."""
    for col in [k for k, _ in keys] + [view.timestamp_field]:
        nulls = table.column(col).null_count
        if nulls:
            first = pc.index(pc.is_null(table.column(col)), True).as_py()
            what = "join key" if col != view.timestamp_field else "timestamp"
            raise SchemaError(
                f"view {view.name!r}: {what} column {col!r} has {nulls} null value(s), first at "
                f"row {first} (rule: {what}s are never null)",
                view=view.name,
                column=col,
                rule=f"null {what}",
                nulls=nulls,
            )


def check_finite(table: pa.Table, view: FeatureView) -> None:
    """Float features hold finite numbers or null (``table`` in stored form)."""
    for f in view.features:
        if f.dtype not in ("float32", "float64"):
            continue
        col = table.column(f.name)
        bad = pc.invert(pc.fill_null(pc.is_finite(col), True))
        count = pc.sum(bad).as_py() or 0
        if count:
            first = pc.index(bad, True).as_py()
            value = col[first].as_py()
            raise ValidationError(
                f"view {view.name!r}: feature {f.name!r} has {count} non-finite value(s), first "
                f"{value!r} at row {first} (rule: a finite {f.dtype}; NaN, infinities and "
                "values that overflow the dtype are refused, use null for missing)",
                field=f.name,
                value=repr(value),
                rule=f"finite {f.dtype}",
                view=view.name,
                row=first,
            )


def check_event_times(
    table: pa.Table, view: FeatureView, max_future_skew: timedelta, now_us: int | None = None
) -> None:
    """No event time later than ``now + max_future_skew`` (``table`` in stored form)."""
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    skew_us = int(max_future_skew.total_seconds() * 1_000_000)
    limit = now_us + skew_us
    ts = table.column(view.timestamp_field).cast(pa.int64())
    late = pc.fill_null(pc.greater(ts, pa.scalar(limit, pa.int64())), False)
    count = pc.sum(late).as_py() or 0
    if not count:
        return
    first = pc.index(late, True).as_py()
    when = datetime.fromtimestamp(ts[first].as_py() / 1_000_000, UTC).isoformat()
    raise ValidationError(
        f"view {view.name!r}: {count} row(s) have {view.timestamp_field!r} in the future, first "
        f"{when} at row {first} (rule: event times at most feature_store.max_future_skew = "
        f"{max_future_skew} ahead of the clock)",
        field=view.timestamp_field,
        value=when,
        rule="event time <= now + max_future_skew",
        view=view.name,
        row=first,
    )


def conform(
    table: pa.Table,
    view: FeatureView,
    keys: list[tuple[str, str]],
    *,
    max_future_skew: timedelta | None = None,
    now_us: int | None = None,
) -> pa.Table:
    """Validate ``table`` and return it in stored form: declared columns only, in order, cast.

    The result has keys, the timestamp (``timestamp[us, UTC]``) and features (without
    ``_seq``, which the writer adds). ``max_future_skew`` (None: no bound) refuses rows dated
    further than that into the future; float features must be finite.
    """
    check_schema(table.schema, view, keys)
    check_nulls(table, view, keys)
    cols, fields = [], []
    for col, dtype in declared_columns(view, keys):
        target = TS_TYPE if dtype == "timestamp" else arrow_type(dtype)
        arr = table.column(col)
        if arr.type != target:
            if pa.types.is_dictionary(arr.type):
                arr = arr.cast(arr.type.value_type)
            try:
                arr = arr.cast(target, safe=dtype not in ("float32",))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(
                    f"view {view.name!r}: column {col!r} cannot be stored as {dtype}: {e}",
                    view=view.name,
                    column=col,
                    rule="wrong dtype",
                    dtype=dtype,
                ) from None
        cols.append(arr)
        fields.append(pa.field(col, target))
    out = pa.Table.from_arrays(cols, schema=pa.schema(fields))
    check_finite(out, view)
    if max_future_skew is not None:
        check_event_times(out, view, max_future_skew, now_us)
    return out


def _role(view: FeatureView, keys: list[tuple[str, str]], col: str) -> str:
    if col in {k for k, _ in keys}:
        return "join key"
    if col == view.timestamp_field:
        return "timestamp"
    return "feature"
