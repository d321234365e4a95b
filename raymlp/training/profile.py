"""The reference profile: what the training features looked like, saved with the model for drift
detection and data-quality checks at serving time (``reference_profile.json``).

Format (``"format": "raymlp.reference_profile/v1"``)::

    {"format": ..., "rows": <train rows>, "sample_rows": <rows profiled>,
     "features": {
        "<numeric input>": {"kind": "numeric", "dtype": "float64", "count": n,
            "missing_rate": r, "mean": m, "std": s, "min": lo, "max": hi,
            "percentiles": [p0, p1, ..., p100],                  # 101 values: an approximate CDF
            "histogram": {"edges": [e0, ..., ek], "fractions": [f1, ..., fk]}},
        "<categorical input>": {"kind": "categorical", "dtype": "string", "count": n,
            "missing_rate": r, "cardinality": k,
            "frequencies": {"<category>": f, ...},              # top categories, share of non-missing
            "other_fraction": f_other}},
     "prediction": {<numeric entry over the predicted probability>},
     "label": {"positive_rate": r}}

Histogram bins are deciles of the train sample; a live value ``x`` falls in bin
:func:`bin_index` ``(edges, x)`` (the first and last bins are open-ended), so PSI over live
traffic compares fractions bin by bin. Percentiles let KS-style statistics be computed without
shipping the training data.

    >>> import pyarrow as pa
    >>> from raymlp.training.profile import build_profile
    >>> prof = build_profile(pa.table({"x": [1.0, 2.0, 3.0, None]}), {"x": "numeric"})
    >>> prof["features"]["x"]["missing_rate"]
    0.25
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlp.predictor.preprocessing import category_key

__all__ = ["build_profile", "numeric_profile", "bin_index", "FORMAT"]

FORMAT = "raymlp.reference_profile/v1"
_TOP_CATEGORIES = 100


def bin_index(edges: list[float] | np.ndarray, x: np.ndarray) -> np.ndarray:
    """Histogram bin of each value for a profile's ``edges`` (k+1 edges → bins 0..k-1; values
    below the first or above the last edge go to the end bins)."""
    e = np.asarray(edges, dtype=np.float64)
    return np.searchsorted(e[1:-1], np.asarray(x, dtype=np.float64), side="right")


def _f(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def numeric_profile(
    values: np.ndarray,
    bins: int = 10,
    fixed_edges: list[float] | None = None,
    dtype: str = "float64",
) -> dict[str, Any]:
    """Profile of one numeric column (NaN = missing)."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    present = x[~np.isnan(x)]
    out: dict[str, Any] = {
        "kind": "numeric",
        "dtype": dtype,
        "count": n,
        "missing_rate": float(1 - present.size / n) if n else 0.0,
    }
    if present.size == 0:
        out.update(
            mean=None,
            std=None,
            min=None,
            max=None,
            percentiles=[],
            histogram={"edges": [], "fractions": []},
        )
        return out
    pct = np.percentile(present, np.arange(101))
    if fixed_edges is not None:
        edges = np.asarray(fixed_edges, dtype=np.float64)
    else:
        edges = np.unique(np.percentile(present, np.linspace(0, 100, bins + 1)))
        if edges.size < 2:  # a constant column: one bin around the value
            edges = np.array([edges[0], edges[0]])
    k = max(edges.size - 1, 1)
    counts = np.bincount(np.minimum(bin_index(edges, present), k - 1), minlength=k)
    out.update(
        mean=_f(present.mean()),
        std=_f(present.std()),
        min=_f(present.min()),
        max=_f(present.max()),
        percentiles=[float(v) for v in pct],
        histogram={
            "edges": [float(v) for v in edges],
            "fractions": [float(c / present.size) for c in counts],
        },
    )
    return out


def _categorical_profile(col: Any, dtype: str) -> dict[str, Any]:
    if isinstance(col, pa.ChunkedArray | pa.Array):
        values = col.to_pylist()
    else:
        values = list(col)
    keys = [category_key(v) for v in values]
    n = len(keys)
    counts = Counter(k for k in keys if k is not None)
    present = sum(counts.values())
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP_CATEGORIES]
    freqs = {k: c / present for k, c in top} if present else {}
    return {
        "kind": "categorical",
        "dtype": dtype,
        "count": n,
        "missing_rate": float(1 - present / n) if n else 0.0,
        "cardinality": len(counts),
        "frequencies": freqs,
        "other_fraction": float(max(0.0, 1.0 - sum(freqs.values()))) if present else 0.0,
    }


def build_profile(
    sample: pa.Table,
    kinds: Mapping[str, str],
    *,
    dtypes: Mapping[str, str] | None = None,
    total_rows: int | None = None,
    predictions: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Profile ``sample`` (raw train features) column by column.

    Args:
        kinds: column → ``numeric`` or ``categorical`` (as the preprocessor encodes it).
        dtypes: column → simple dtype recorded alongside.
        total_rows: rows of the whole train split (``sample`` may be a subsample).
        predictions: model probabilities on held-out data → the ``prediction`` entry.
        labels: 0/1 labels → ``label.positive_rate``.
    """
    dtypes = dtypes or {}
    features: dict[str, Any] = {}
    for name, kind in kinds.items():
        col = sample.column(name)
        if kind == "numeric":
            t = col.type
            if pa.types.is_dictionary(t):
                col = col.cast(t.value_type)
            x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            features[name] = numeric_profile(x, dtype=dtypes.get(name, "float64"))
        else:
            features[name] = _categorical_profile(col, dtypes.get(name, "string"))
    prof: dict[str, Any] = {
        "format": FORMAT,
        "rows": int(total_rows if total_rows is not None else sample.num_rows),
        "sample_rows": int(sample.num_rows),
        "features": features,
    }
    if predictions is not None:
        prof["prediction"] = numeric_profile(
            np.asarray(predictions), fixed_edges=[i / 10 for i in range(11)]
        )
    if labels is not None and len(labels):
        prof["label"] = {"positive_rate": float(np.mean(labels))}
    return prof
