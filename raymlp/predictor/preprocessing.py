"""Feature engineering fitted on the train split, saved as JSON, applied by one code path.

:class:`Preprocessor` turns raw feature values into the float32 matrix the network eats:

- numeric columns: missing → the train mean, then standard scaling ``(x − mean) / std``;
- categorical columns (strings, or columns listed in ``categorical``): one-hot over the train
  split's most frequent categories plus one ``__unknown__`` slot, or an ordinal code
  (0 = unknown/missing, 1..K = the categories by train frequency).

It is fitted only on the train split (:class:`PreprocessorFitter` streams batches, so the split
never has to fit in memory) and saved in the model artifact as ``preprocessor.json``. Training
(``Dataset.map_batches``), evaluation, batch inference and online serving all call the same
:meth:`Preprocessor.transform`, which takes a pyarrow table, a dict of columns, a list of row
dicts or a pandas DataFrame — so the model sees identical numbers in training and serving::

    >>> import pyarrow as pa
    >>> from raymlp.predictor.preprocessing import PreprocessorFitter
    >>> t = pa.table({"tenure": [1, 2, 3], "plan": ["a", "b", "a"]})
    >>> fitter = PreprocessorFitter(["tenure", "plan"])
    >>> fitter.update(t)
    >>> pre = fitter.finish()
    >>> pre.transform([{"tenure": 2, "plan": "zzz"}]).tolist()     # unknown plan → unknown slot
    [[0.0, 0.0, 0.0, 1.0]]
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlp._private.values import category_key
from raymlp.errors import SchemaError, ValidationError

__all__ = [
    "Preprocessor",
    "PreprocessorFitter",
    "ColumnSpec",
    "category_key",
    "as_columns",
    "short_feature_names",
]

FORMAT = "raymlp.preprocessor/v1"
UNKNOWN = "__unknown__"


def _simple_dtype(t: pa.DataType, name: str = "") -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float64"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    raise SchemaError(
        f"feature {name!r} has type {t}, which is not supported (rule: numeric, bool or string)",
        column=name,
        value=str(t),
        rule="numeric, bool or string",
    )


@dataclass
class ColumnSpec:
    """How one input column is encoded. ``kind``: numeric | onehot | ordinal."""

    name: str
    kind: str
    dtype: str
    mean: float = 0.0
    std: float = 1.0
    categories: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        if self.kind == "onehot":
            return len(self.categories) + 1
        return 1

    def output_names(self) -> list[str]:
        if self.kind == "onehot":
            return [f"{self.name}={c}" for c in self.categories] + [f"{self.name}={UNKNOWN}"]
        return [self.name]


def as_columns(data: Any) -> tuple[Mapping[str, Any], int]:
    """Normalise any supported input into ``({name: column}, n_rows)``.

    Supported: ``pyarrow.Table``/``RecordBatch``, a dict of columns (lists/arrays), a dict of
    scalars (one row), a list of row dicts, a pandas DataFrame.
    """
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return {name: data.column(name) for name in data.column_names}, data.num_rows
    if hasattr(data, "to_dict") and hasattr(data, "columns") and hasattr(data, "iloc"):
        return {str(c): data[c].to_numpy() for c in data.columns}, len(data)
    if isinstance(data, Mapping):
        if not data:
            return {}, 0
        values = list(data.values())
        scalar = [isinstance(v, str | bytes) or not isinstance(v, Iterable) for v in values]
        if all(scalar):
            return {k: [v] for k, v in data.items()}, 1  # one row as a dict of scalars
        if any(scalar):
            raise ValidationError(
                "mixes scalars and columns (rule: one row of scalars, or equal-length columns)",
                rule="rows or columns",
            )
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            raise ValidationError(
                "columns have different lengths (rule: equal-length columns)", rule="equal length"
            )
        return dict(data), lengths.pop()
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        rows = list(data)
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping):
                raise ValidationError(
                    f"row {i} is a {type(r).__name__}, not a mapping (rule: rows are dicts)",
                    field=f"[{i}]",
                    rule="rows are dicts",
                )
        names: dict[str, None] = {}
        for r in rows:
            names.update(dict.fromkeys(r))
        return {n: [r.get(n) for r in rows] for n in names}, len(rows)
    raise ValidationError(
        f"cannot read features from a {type(data).__name__} "
        "(rule: pyarrow table, dict of columns, list of row dicts or DataFrame)",
        rule="supported input",
    )


class Preprocessor:
    """A fitted feature transform (see the module docstring). Build with
    :class:`PreprocessorFitter`; save with :meth:`to_json`, load with :meth:`from_json`."""

    def __init__(self, columns: list[ColumnSpec], aliases: dict[str, str] | None = None) -> None:
        self.columns = list(columns)
        self.aliases = dict(aliases or {})
        self.output_names = [n for c in self.columns for n in c.output_names()]
        self.output_dim = len(self.output_names)
        # Keyed by category_key(), whose None (missing) is never a key: get() gives -1.
        self._index: dict[str, dict[str | None, int]] = {
            c.name: {cat: i for i, cat in enumerate(c.categories)}
            for c in self.columns
            if c.kind != "numeric"
        }
        self._arrow_cats = {
            c.name: pa.array(c.categories, type=pa.string())
            for c in self.columns
            if c.kind != "numeric"
        }

    @property
    def input_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __repr__(self) -> str:
        kinds = Counter(c.kind for c in self.columns)
        return (
            f"Preprocessor({len(self.columns)} inputs {dict(kinds)} -> {self.output_dim} features)"
        )

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "columns": [asdict(c) for c in self.columns],
            "aliases": self.aliases,
            "output_names": self.output_names,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        if data.get("format") != FORMAT:
            raise ValidationError(
                f"preprocessor format {data.get('format')!r} is not {FORMAT!r}",
                field="format",
                value=data.get("format"),
            )
        return cls([ColumnSpec(**c) for c in data["columns"]], data.get("aliases") or {})

    @classmethod
    def from_json(cls, text: str | bytes) -> Preprocessor:
        return cls.from_dict(json.loads(text))

    # -- transform --------------------------------------------------------------------------

    def _column(self, cols: Mapping[str, Any], name: str) -> Any:
        if name in cols:
            return cols[name]
        for alias, full in self.aliases.items():
            if full == name and alias in cols:
                return cols[alias]
        raise ValidationError(
            f"feature {name!r} is missing (rule: every model input is required)",
            field=name,
            rule="required",
        )

    @staticmethod
    def _numeric(col: Any, name: str) -> np.ndarray:
        try:
            if isinstance(col, pa.ChunkedArray | pa.Array):
                if pa.types.is_dictionary(col.type):
                    col = col.cast(col.type.value_type)
                return np.asarray(
                    pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
                )
            return np.asarray(col, dtype=np.float64).reshape(-1)
        except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ValidationError(
                f"feature {name!r} is not numeric (rule: a number or null)",
                field=name,
                rule="numeric",
            ) from e

    def _codes(self, col: Any, spec: ColumnSpec) -> np.ndarray:
        """0..K-1 for known categories, -1 for unknown or missing."""
        if isinstance(col, pa.ChunkedArray | pa.Array):
            t = col.type
            if pa.types.is_dictionary(t):
                col, t = col.cast(t.value_type), t.value_type
            if pa.types.is_large_string(t):
                col, t = col.cast(pa.string()), pa.string()
            if pa.types.is_string(t):
                # Fast path for strings: identical result to category_key() on each value.
                idx = pc.index_in(col, value_set=self._arrow_cats[spec.name])
                return np.asarray(pc.fill_null(idx, -1).to_numpy(zero_copy_only=False), np.int64)
            col = col.to_pylist()
        index = self._index[spec.name]
        values = col.tolist() if isinstance(col, np.ndarray) else col
        return np.fromiter(
            (index.get(category_key(v), -1) for v in values), dtype=np.int64, count=len(values)
        )

    def transform(self, data: Any) -> np.ndarray:
        """Raw features → float32 matrix ``(n, output_dim)``. Extra columns are ignored.

        Raises:
            ValidationError: a model input is missing or a numeric input is not a number
                (``field`` names it).
        """
        cols, n = as_columns(data)
        out = np.empty((n, self.output_dim), dtype=np.float32)
        if n == 0:
            return out
        j = 0
        for spec in self.columns:
            col = self._column(cols, spec.name)
            if spec.kind == "numeric":
                x = self._numeric(col, spec.name)
                x = np.where(np.isnan(x), spec.mean, x)
                out[:, j] = (x - spec.mean) / spec.std
                j += 1
            elif spec.kind == "onehot":
                codes = self._codes(col, spec)
                k = len(spec.categories)
                block = out[:, j : j + k + 1]
                block[:] = 0.0
                block[np.arange(n), np.where(codes < 0, k, codes)] = 1.0
                j += k + 1
            else:
                out[:, j] = self._codes(col, spec) + 1
                j += 1
        return out

    def signature_inputs(self) -> list[dict[str, str]]:
        """``[{"name", "dtype"}]`` of the raw inputs, for the registry signature."""
        return [{"name": c.name, "dtype": c.dtype} for c in self.columns]


class _NumStats:
    __slots__ = ("n", "mean", "m2")

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        x = x[~np.isnan(x)]
        if x.size == 0:
            return
        nb, mb = x.size, float(x.mean())
        m2b = float(((x - mb) ** 2).sum())
        n = self.n + nb
        delta = mb - self.mean
        # Chan et al.'s pairwise merge: stable for any number of batches.
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n


class PreprocessorFitter:
    """Accumulates train-split statistics batch by batch, then builds the :class:`Preprocessor`.

    Args:
        columns: raw input columns, in model order.
        categorical / numeric: force a column's kind (default: strings are categorical,
            numbers and bools numeric).
        encoding: ``onehot`` or ``ordinal`` for categorical columns.
        max_categories / min_category_count: vocabulary limits.
        aliases: other names accepted for an input at transform time, ``{alias: column}``
            (the feature store's ``view__feature`` names for short-named inputs).
    """

    def __init__(
        self,
        columns: Sequence[str],
        *,
        categorical: Iterable[str] = (),
        numeric: Iterable[str] = (),
        encoding: str = "onehot",
        max_categories: int = 50,
        min_category_count: int = 1,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        if not columns:
            raise ValidationError("no input columns to fit (rule: at least one)", field="columns")
        self.columns = list(columns)
        self.forced_cat, self.forced_num = set(categorical), set(numeric)
        both = self.forced_cat & self.forced_num
        if both:
            raise ValidationError(
                f"columns {sorted(both)} are forced both categorical and numeric",
                field="preprocessing.categorical",
                value=sorted(both),
            )
        if encoding not in ("onehot", "ordinal"):
            raise ValidationError(
                f"encoding {encoding!r} (rule: onehot or ordinal)",
                field="preprocessing.categorical_encoding",
                value=encoding,
            )
        self.encoding = encoding
        self.max_categories, self.min_category_count = max_categories, min_category_count
        self.aliases = dict(aliases or {})
        self.rows = 0
        self._kinds: dict[str, tuple[str, str]] = {}
        self._num: dict[str, _NumStats] = {}
        self._cat: dict[str, Counter] = {}

    def _kind(self, name: str, t: pa.DataType) -> tuple[str, str]:
        if name not in self._kinds:
            dtype = _simple_dtype(t, name) if not pa.types.is_null(t) else "float64"
            if name in self.forced_cat or (name not in self.forced_num and dtype == "string"):
                kind = "categorical"
            else:
                kind = "numeric"
            if kind == "numeric" and dtype == "string":
                raise SchemaError(
                    f"column {name!r} is forced numeric but holds strings",
                    column=name,
                    rule="numeric",
                )
            self._kinds[name] = (kind, dtype)
        return self._kinds[name]

    def update(self, batch: pa.Table | pa.RecordBatch) -> None:
        """Add one batch of train rows (a pyarrow table with at least the input columns)."""
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        missing = [c for c in self.columns if c not in batch.column_names]
        if missing:
            raise SchemaError(
                f"columns {missing} are missing from the training data", column=missing[0]
            )
        self.rows += batch.num_rows
        for name in self.columns:
            col = batch.column(name)
            kind, _ = self._kind(name, col.type)
            if kind == "numeric":
                stats = self._num.setdefault(name, _NumStats())
                stats.update(Preprocessor._numeric(col, name))
            else:
                counter = self._cat.setdefault(name, Counter())
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    for item in pc.value_counts(col).to_pylist():
                        if item["values"] is not None:
                            counter[item["values"]] += item["counts"]
                else:
                    counter.update(k for k in map(category_key, col.to_pylist()) if k is not None)

    def finish(self) -> Preprocessor:
        """The fitted :class:`Preprocessor` (raises if no rows were seen)."""
        if self.rows == 0:
            raise ValidationError(
                "the train split is empty (rule: at least one training row)",
                field="dataset",
                rule="non-empty train split",
            )
        specs: list[ColumnSpec] = []
        for name in self.columns:
            kind, dtype = self._kinds[name]
            if kind == "numeric":
                st = self._num.get(name) or _NumStats()
                std = math.sqrt(st.m2 / st.n) if st.n > 1 else 1.0
                specs.append(
                    ColumnSpec(
                        name,
                        "numeric",
                        dtype,
                        mean=st.mean if st.n else 0.0,
                        std=std if std > 1e-12 else 1.0,
                    )
                )
            else:
                counts = self._cat.get(name, Counter())
                # Most frequent first; ties broken by the value so the vocabulary is deterministic.
                ranked = sorted(
                    (c for c in counts.items() if c[1] >= self.min_category_count),
                    key=lambda kv: (-kv[1], kv[0]),
                )[: self.max_categories]
                specs.append(
                    ColumnSpec(name, self.encoding, dtype, categories=[k for k, _ in ranked])
                )
        return Preprocessor(specs, self.aliases)


def short_feature_names(columns: Sequence[str]) -> dict[str, str]:
    """``{"customer_profile__tenure_months": "tenure_months", ...}`` for the columns whose
    feature name is unique among ``columns`` (the others keep their ``view__feature`` name)."""
    short: dict[str, list[str]] = {}
    for c in columns:
        if "__" in c:
            short.setdefault(c.split("__", 1)[1], []).append(c)
    taken = {c for c in columns if "__" not in c}
    return {full[0]: s for s, full in short.items() if len(full) == 1 and s not in taken}
