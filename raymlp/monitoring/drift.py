"""Live drift and data quality of one model version against its reference profile.

:class:`FeatureCell` is the mergeable per-bucket summary of the traffic one model version saw:
for every profiled feature the counts on its reference grid (numeric) or per category, missing
values, out-of-range values, type/schema violations, and the predicted probability.
:func:`observe` folds a batch of records into a cell (vectorised per feature);
:func:`feature_drift` turns a merged cell into per-feature statistics and verdicts::

    cell = FeatureCell.empty(profile)
    observe(profile, cell, [rec["features"] for rec in batch], probs, tolerance=0.0)
    rows = feature_drift(profile, cell, DriftSettings())
    # [{"feature": "tenure_months", "kind": "numeric", "psi": 0.31, "ks": 0.2, "ks_p": 1e-9,
    #   "wasserstein": 0.42, "drifted": True, "n": 1200, "missing_ratio": 0.0, ...}, ...]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raymlp.config import DriftSettings
from raymlp.monitoring.records import category_key
from raymlp.monitoring.reference import (
    CategoricalReference,
    NumericReference,
    ReferenceProfile,
)
from raymlp.monitoring.stats import chi_square, js_distance, ks_pvalue, psi, wasserstein_binned

__all__ = [
    "NumericCell",
    "CategoricalCell",
    "FeatureCell",
    "observe",
    "observe_rejected",
    "feature_drift",
    "prediction_drift",
    "SCHEMA_ERROR_CODES",
    "MAX_NEW_CATEGORIES",
]

#: Error codes of rejected requests that count as schema violations.
SCHEMA_ERROR_CODES = frozenset({"schema_error", "validation_error", "bad_request"})
#: Unseen category names remembered per cell (for the report).
MAX_NEW_CATEGORIES = 20
_ABSENT = object()
_NUMERIC_TYPES = (int, float)


@dataclass
class NumericCell:
    counts: np.ndarray
    present: int = 0
    missing: int = 0
    out_of_range: int = 0
    below_sum: float = 0.0  # sum of (p0 - x) over values below the reference range
    above_sum: float = 0.0  # sum of (x - p100) over values above it

    @classmethod
    def empty(cls, ref: NumericReference) -> NumericCell:
        return cls(counts=np.zeros(ref.grid.size + 1, np.int64))

    def merge(self, o: NumericCell) -> None:
        self.counts += o.counts
        self.present += o.present
        self.missing += o.missing
        self.out_of_range += o.out_of_range
        self.below_sum += o.below_sum
        self.above_sum += o.above_sum

    def add(self, ref: NumericReference, x: np.ndarray, tolerance: float) -> None:
        """Fold present values ``x`` (no NaN) in."""
        if not x.size:
            return
        self.present += int(x.size)
        self.counts += np.bincount(ref.bins(x), minlength=self.counts.size)
        lo, hi = float(ref.percentiles[0]), float(ref.percentiles[-1])
        self.below_sum += float(np.sum(np.maximum(lo - x, 0.0)))
        self.above_sum += float(np.sum(np.maximum(x - hi, 0.0)))
        slack = tolerance * (ref.max - ref.min)
        self.out_of_range += int(np.count_nonzero((x < ref.min - slack) | (x > ref.max + slack)))


@dataclass
class CategoricalCell:
    counts: np.ndarray  # per reference category, then OTHER
    present: int = 0
    missing: int = 0
    unseen: int = 0
    new_categories: dict[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls, ref: CategoricalReference) -> CategoricalCell:
        return cls(counts=np.zeros(len(ref.categories) + 1, np.int64))

    def merge(self, o: CategoricalCell) -> None:
        self.counts += o.counts
        self.present += o.present
        self.missing += o.missing
        self.unseen += o.unseen
        for k, v in o.new_categories.items():
            if k in self.new_categories or len(self.new_categories) < MAX_NEW_CATEGORIES:
                self.new_categories[k] = self.new_categories.get(k, 0) + v


@dataclass
class FeatureCell:
    """What one model version's traffic looked like in one bucket (mergeable)."""

    records: int = 0
    violation_records: int = 0
    violations: dict[tuple[str, str], int] = field(default_factory=dict)  # (feature, kind)
    numeric: dict[str, NumericCell] = field(default_factory=dict)
    categorical: dict[str, CategoricalCell] = field(default_factory=dict)
    prediction: NumericCell | None = None

    @classmethod
    def empty(cls, profile: ReferenceProfile | None) -> FeatureCell:
        if profile is None:
            return cls()
        return cls(
            numeric={n: NumericCell.empty(r) for n, r in profile.numeric.items()},
            categorical={n: CategoricalCell.empty(r) for n, r in profile.categorical.items()},
            prediction=NumericCell.empty(profile.prediction) if profile.prediction else None,
        )

    def merge(self, o: FeatureCell) -> None:
        self.records += o.records
        self.violation_records += o.violation_records
        for k, v in o.violations.items():
            self.violations[k] = self.violations.get(k, 0) + v
        for n, c in o.numeric.items():
            if n in self.numeric:
                self.numeric[n].merge(c)
            else:
                self.numeric[n] = NumericCell(
                    c.counts.copy(), c.present, c.missing, c.out_of_range, c.below_sum, c.above_sum
                )
        for n, cc in o.categorical.items():
            if n in self.categorical:
                self.categorical[n].merge(cc)
            else:
                self.categorical[n] = CategoricalCell(
                    cc.counts.copy(), cc.present, cc.missing, cc.unseen, dict(cc.new_categories)
                )
        if o.prediction is not None:
            if self.prediction is None:
                p = o.prediction
                self.prediction = NumericCell(
                    p.counts.copy(), p.present, p.missing, p.out_of_range, p.below_sum, p.above_sum
                )
            else:
                self.prediction.merge(o.prediction)

    def _violate(self, feature: str, kind: str, n: int) -> None:
        if n:
            self.violations[(feature, kind)] = self.violations.get((feature, kind), 0) + n


def _numeric_column(
    feats: Sequence[Mapping[str, Any]], name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values with NaN for missing, absent-key mask, wrong-type mask)."""
    n = len(feats)
    vals = np.full(n, np.nan)
    absent = np.zeros(n, bool)
    wrong = np.zeros(n, bool)
    for i, f in enumerate(feats):
        v = f.get(name, _ABSENT)
        if type(v) in _NUMERIC_TYPES:
            vals[i] = v
        elif v is None:
            continue
        elif v is _ABSENT:
            absent[i] = True
        elif isinstance(v, bool | np.bool_ | np.integer | np.floating):
            vals[i] = float(v)
        else:
            wrong[i] = True
    return vals, absent, wrong


def observe(
    profile: ReferenceProfile,
    cell: FeatureCell,
    feats: Sequence[Mapping[str, Any]],
    probabilities: Sequence[float | None] | None = None,
    tolerance: float = 0.0,
) -> int:
    """Fold the features (and probabilities) of answered requests into ``cell``.

    Returns how many records broke the schema (absent/unexpected feature, wrong type).
    """
    n = len(feats)
    if n == 0:
        return 0
    cell.records += n
    row_bad = np.zeros(n, bool)
    for name, ref in profile.numeric.items():
        c = cell.numeric[name]
        vals, absent, wrong = _numeric_column(feats, name)
        bad_type = wrong
        present = ~np.isnan(vals)
        c.missing += int(n - present.sum())
        c.add(ref, vals[present], tolerance)
        cell._violate(name, "missing_feature", int(absent.sum()))
        cell._violate(name, "type", int(bad_type.sum()))
        row_bad |= absent | bad_type
    for name, cref in profile.categorical.items():
        cc = cell.categorical[name]
        idx = np.empty(n, np.int64)
        other = len(cref.categories)
        absent_n = 0
        for i, f in enumerate(feats):
            v = f.get(name, _ABSENT)
            if v is _ABSENT:
                absent_n += 1
                row_bad[i] = True
                v = None
            key = category_key(v) if not isinstance(v, dict | list) else None
            if key is None:
                idx[i] = -1
                continue
            j = cref.index.get(key)
            if j is None:
                idx[i] = other
                if cref.complete:
                    cc.unseen += 1
                    if key in cc.new_categories or len(cc.new_categories) < MAX_NEW_CATEGORIES:
                        cc.new_categories[key] = cc.new_categories.get(key, 0) + 1
            else:
                idx[i] = j
        ok = idx >= 0
        cc.missing += int(n - ok.sum())
        cc.present += int(ok.sum())
        cc.counts += np.bincount(idx[ok], minlength=cc.counts.size)
        cell._violate(name, "missing_feature", absent_n)
    known = profile.numeric.keys() | profile.categorical.keys()
    for i, f in enumerate(feats):
        extra = [k for k in f if k not in known]
        for k in extra:
            cell._violate(k, "unexpected_feature", 1)
        if extra:
            row_bad[i] = True
    if profile.prediction is not None and cell.prediction is not None and probabilities:
        p = np.asarray([np.nan if v is None else v for v in probabilities], dtype=np.float64)
        present = ~np.isnan(p)
        cell.prediction.missing += int(p.size - present.sum())
        cell.prediction.add(profile.prediction, p[present], 0.0)
    bad = int(row_bad.sum())
    cell.violation_records += bad
    return bad


def observe_rejected(cell: FeatureCell, codes: Sequence[str | None]) -> None:
    """Count requests the gateway rejected for their input (schema/validation errors)."""
    bad = [c for c in codes if c in SCHEMA_ERROR_CODES]
    if bad:
        cell.records += len(bad)
        cell.violation_records += len(bad)
        for c in bad:
            cell._violate("*", c, 1)


def _numeric_stats(
    ref: NumericReference, c: NumericCell, s: DriftSettings, ref_n: int | None
) -> dict[str, Any]:
    n = c.present
    total = n + c.missing
    row: dict[str, Any] = {
        "kind": "numeric",
        "n": n,
        "total": total,
        "missing_ratio": c.missing / total if total else None,
        "reference_missing_rate": ref.missing_rate,
        "out_of_range_ratio": c.out_of_range / n if n else None,
        "psi": None,
        "ks": None,
        "ks_p": None,
        "wasserstein": None,
        "js": None,
        "chi2_p": None,
        "drifted": False,
    }
    if n == 0:
        return row
    cdf_cur = np.cumsum(c.counts)[: ref.grid.size] / n
    ks = float(np.max(np.abs(ref.cdf_left - cdf_cur))) if ref.grid.size else 0.0
    k = ref.psi_fractions.size
    cur_psi = np.bincount(ref.grid_to_psi, weights=c.counts, minlength=k)[:k]
    p = float(psi(ref.psi_fractions, cur_psi))
    w = float(wasserstein_binned(ref.grid, ref.cdf_left, cdf_cur)) if ref.grid.size > 1 else 0.0
    w = (w + (c.below_sum + c.above_sum) / n) / ref.scale
    row.update(psi=p, ks=ks, ks_p=float(ks_pvalue(ks, n, ref_n)), wasserstein=w)
    row["drifted"] = bool(
        n >= s.min_samples
        and row["ks_p"] < s.p_value
        and (p >= s.psi_threshold or w >= s.wasserstein_threshold)
    )
    return row


def _categorical_stats(
    ref: CategoricalReference, c: CategoricalCell, s: DriftSettings
) -> dict[str, Any]:
    n = c.present
    total = n + c.missing
    row: dict[str, Any] = {
        "kind": "categorical",
        "n": n,
        "total": total,
        "missing_ratio": c.missing / total if total else None,
        "reference_missing_rate": ref.missing_rate,
        "out_of_range_ratio": c.unseen / n if n else None,
        "psi": None,
        "ks": None,
        "ks_p": None,
        "wasserstein": None,
        "js": None,
        "chi2_p": None,
        "drifted": False,
        "new_categories": dict(c.new_categories),
    }
    if n == 0:
        return row
    exp = ref.expected
    p = float(psi(exp, c.counts))
    js = float(js_distance(exp, c.counts))
    _, _, chi_p = chi_square(exp, c.counts)
    row.update(psi=p, js=js, chi2_p=float(chi_p))
    row["drifted"] = bool(
        n >= s.min_samples
        and row["chi2_p"] < s.p_value
        and (js >= s.js_threshold or p >= s.psi_threshold)
    )
    return row


def feature_drift(
    profile: ReferenceProfile,
    cell: FeatureCell,
    settings: DriftSettings,
    reference_rows: int | None = None,
) -> list[dict[str, Any]]:
    """Per-feature drift + quality rows (sorted by name) for a merged cell."""
    rows = []
    for name, ref in profile.numeric.items():
        c = cell.numeric.get(name) or NumericCell.empty(ref)
        rows.append(
            {
                "feature": name,
                **_numeric_stats(ref, c, settings, reference_rows or ref.count or None),
            }
        )
    for name, cref in profile.categorical.items():
        cc = cell.categorical.get(name) or CategoricalCell.empty(cref)
        rows.append({"feature": name, **_categorical_stats(cref, cc, settings)})
    for row in rows:
        row["violations"] = sum(v for (f, _), v in cell.violations.items() if f == row["feature"])
    return sorted(rows, key=lambda r: r["feature"])


def prediction_drift(
    profile: ReferenceProfile, cell: FeatureCell, settings: DriftSettings
) -> dict[str, Any] | None:
    """Drift of the predicted probability against the profiled one (None if not profiled)."""
    if profile.prediction is None or cell.prediction is None:
        return None
    row = _numeric_stats(
        profile.prediction, cell.prediction, settings, profile.prediction.count or None
    )
    return {"feature": "prediction", **row}
