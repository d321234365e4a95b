"""Check a dataset against a feature view's schema and bring it to the stored form.

Rejections raise :class:`~raymlp.errors.SchemaError` naming the view, the column and the rule:

- a declared column (join key, timestamp field, feature) is missing;
- a column's type cannot be stored as the declared dtype (see :func:`~.dtypes.cast_rule`);
- the timestamp has no timezone;
- a join key or the timestamp is null.

Extra columns are ignored. Example::

    table = conform(table, view, keys=[("customer_id", "string")])
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from raymlp.config import FeatureView
from raymlp.errors import SchemaError
from raymlp.features.dtypes import TS_TYPE, arrow_type, cast_rule

__all__ = ["declared_columns", "check_schema", "check_nulls", "conform"]


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


def conform(table: pa.Table, view: FeatureView, keys: list[tuple[str, str]]) -> pa.Table:
    """Validate ``table`` and return it in stored form: declared columns only, in order, cast.

    The result has keys, the timestamp (``timestamp[us, UTC]``) and features (without
    ``_seq``, which the writer adds).
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
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def _role(view: FeatureView, keys: list[tuple[str, str]], col: str) -> str:
    if col in {k for k, _ in keys}:
        return "join key"
    if col == view.timestamp_field:
        return "timestamp"
    return "feature"
