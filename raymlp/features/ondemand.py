"""On-demand feature views: a Python function over request data and fetched features.

The same code path runs in historical retrieval (once per partition) and online serving (once
per request batch), so training and serving compute identical values. The function gets a
``dict`` of numpy arrays (one per source feature, named ``view__feature``, and one per request
field): numbers as float64 with NaN for null (integers without nulls stay int64), strings and
timestamps as object arrays with None. It returns a ``dict`` with one array-like per declared
output; NaN/None become null and values are cast to the declared dtype.

Example::

    def charges_per_tenure(inputs):
        tenure = inputs["customer_profile__tenure_months"]
        return {"charges_per_tenure": inputs["customer_profile__monthly_charges"]
                / np.where(tenure > 0, tenure, np.nan)}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from raymlp._private.importing import ImportPathError, resolve_import_path
from raymlp.config import OnDemandFeatureView
from raymlp.errors import SchemaError, ValidationError
from raymlp.features.definitions import RetrievalPlan, parse_ref
from raymlp.features.dtypes import arrow_type, output_column

__all__ = ["load_udf", "udf_inputs", "run_on_demand", "apply_on_demand"]

_UDFS: dict[str, Callable[[dict[str, np.ndarray]], dict[str, Any]]] = {}


def load_udf(path: str) -> Callable[[dict[str, np.ndarray]], dict[str, Any]]:
    """Import ``package.module:function`` (cached per process)."""
    fn = _UDFS.get(path)
    if fn is not None:
        return fn
    try:
        fn = resolve_import_path(path, what="udf")
    except ImportPathError as e:
        raise ValidationError(
            f"udf {path!r} cannot be imported: {e.detail}",
            field="udf",
            value=path,
            rule="importable 'package.module:function'",
        ) from None
    if not callable(fn):
        raise ValidationError(
            f"udf {path!r} is not callable", field="udf", value=path, rule="a function"
        )
    _UDFS[path] = fn
    return fn


def _to_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        if col.null_count:
            return col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return col.to_numpy(zero_copy_only=False) if isinstance(col, pa.Array) else col.to_numpy()
    if pa.types.is_boolean(t) and not col.null_count:
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=bool)
    return np.array(col.to_pylist(), dtype=object)


def udf_inputs(table: pa.Table, columns: list[str]) -> dict[str, np.ndarray]:
    """The function's input dict from ``columns`` of ``table``."""
    return {c: _to_numpy(table.column(c)) for c in columns}


def run_on_demand(
    odfv: OnDemandFeatureView, table: pa.Table, outputs: list[str] | None = None
) -> dict[str, pa.Array]:
    """Evaluate ``odfv`` over ``table``; returns ``{odfv__feature: array}`` for ``outputs``."""
    cols = [output_column(parse_ref(s).view, parse_ref(s).feature) for s in odfv.sources]
    cols += [f.name for f in odfv.request_schema]
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise SchemaError(
            f"on-demand view {odfv.name!r} needs input {missing[0]!r} (rule: request fields "
            "come with every entity row)",
            view=odfv.name,
            column=missing[0],
            rule="missing request field",
        )
    n = table.num_rows
    result = load_udf(odfv.udf)(udf_inputs(table, cols))
    if not isinstance(result, dict):
        raise ValidationError(
            f"udf {odfv.udf!r} returned {type(result).__name__} (rule: a dict of output arrays)",
            field="udf",
            value=odfv.udf,
            rule="returns dict",
        )
    out: dict[str, pa.Array] = {}
    wanted = outputs or [f.name for f in odfv.features]
    for f in odfv.features:
        if f.name not in wanted:
            continue
        if f.name not in result:
            raise ValidationError(
                f"udf {odfv.udf!r} returned no {f.name!r} (rule: one array per declared output)",
                field=f.name,
                value=odfv.udf,
                rule="declared output",
            )
        values = result[f.name]
        arr = (
            values
            if isinstance(values, pa.Array)
            else pa.array(
                np.asarray(values) if not isinstance(values, list) else values, from_pandas=True
            )
        )
        if len(arr) != n:
            raise ValidationError(
                f"udf {odfv.udf!r}: output {f.name!r} has {len(arr)} values for "
                f"{n} rows (rule: one per row)",
                field=f.name,
                value=len(arr),
                rule="one value per row",
            )
        out[output_column(odfv.name, f.name)] = arr.cast(arrow_type(f.dtype), safe=False)
    return out


def apply_on_demand(table: pa.Table, plan: RetrievalPlan) -> pa.Table:
    """Append every on-demand output of ``plan`` to ``table`` and drop hidden input columns."""
    for odfv, outputs in plan.on_demand:
        for name, arr in run_on_demand(odfv, table, outputs).items():
            table = table.append_column(name, arr)
    if plan.hidden_columns:
        table = table.drop_columns([c for c in plan.hidden_columns if c in table.column_names])
    return table
