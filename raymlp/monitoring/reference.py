"""The reference a model's live traffic is compared to: the training-time profile.

Training saves ``reference_profile.json`` in the model artifact
(``<root>/models/<name>/<version>/``, format ``raymlp.reference_profile/v1``, written by
``raymlp.training.profile``). This module reads it into :class:`ReferenceProfile`, accepting:

* numeric features: ``percentiles`` (101 values, an approximate CDF), ``histogram`` (``edges``
  + ``fractions``, or ``counts``), ``min``/``max``/``mean``/``std``, ``missing_rate``;
  or a raw ``sample`` list, from which all of that is computed;
* categorical features: ``frequencies`` (category → share of non-missing values),
  ``other_fraction``, ``cardinality``, ``missing_rate``; or a raw ``sample``;
* an optional ``prediction`` entry (numeric, over the predicted probability).

Live values are counted on a per-feature **grid** (the union of percentile and histogram edges)
so that one bucketed count supports PSI (on the profile's own bins, with its left-closed
convention), KS (CDF gaps at the grid points) and Wasserstein (exact under within-bin
uniformity, plus the mass beyond the reference range)::

    >>> prof = ReferenceProfile.from_dict({"features": {"x": {"kind": "numeric",
    ...         "sample": [0.0, 1.0, 2.0, 3.0, 4.0]}}})
    >>> prof.numeric["x"].min, prof.numeric["x"].max
    (0.0, 4.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raymlp.errors import ValidationError
from raymlp.monitoring.records import category_key

__all__ = [
    "NumericReference",
    "CategoricalReference",
    "ReferenceProfile",
    "PREDICTION_FEATURE",
    "OTHER",
]

#: Name under which the predicted probability is tracked like a feature.
PREDICTION_FEATURE = "__prediction__"
#: Bucket of categories the reference does not list.
OTHER = "__other__"


@dataclass
class NumericReference:
    """A numeric feature's training distribution, and the grid live values are counted on."""

    name: str
    percentiles: np.ndarray  # 101 values (quantile levels 0..1 step 0.01)
    psi_edges: np.ndarray  # k+1 histogram edges
    psi_fractions: np.ndarray  # k fractions
    min: float
    max: float
    mean: float
    std: float
    missing_rate: float
    count: int = 0  # reference values profiled (0: unknown)
    grid: np.ndarray = field(init=False)  # sorted unique boundaries
    cdf_left: np.ndarray = field(init=False)  # reference P(X < g) at each grid point
    grid_to_psi: np.ndarray = field(init=False)  # grid bin (len(grid)+1) -> psi bin

    def __post_init__(self) -> None:
        p = np.asarray(self.percentiles, dtype=np.float64)
        e = np.asarray(self.psi_edges, dtype=np.float64)
        self.grid = np.unique(np.concatenate([p, e]))
        # P_ref(X < g): share of percentile levels strictly below g, linearly interpolated
        # between them (left limit, matching the left-closed bins of the profile).
        levels = np.linspace(0.0, 1.0, p.size) if p.size else np.array([])
        if p.size >= 2:
            lt = np.searchsorted(p, self.grid, side="left")
            lo = np.clip(lt - 1, 0, p.size - 1)
            hi = np.clip(lt, 0, p.size - 1)
            span = p[hi] - p[lo]
            frac = np.divide(self.grid - p[lo], span, out=np.ones_like(span), where=span > 0)
            cdf = np.where(lt == 0, 0.0, levels[lo] + frac * (levels[hi] - levels[lo]))
            # at a value repeated in the percentiles (ties), P(X < v) is the first level of v
            cdf = np.where((lt < p.size) & (p[hi] == self.grid), levels[hi], cdf)
            self.cdf_left = np.clip(cdf, 0.0, 1.0)
        else:
            self.cdf_left = np.zeros(self.grid.size)
        # grid bin j holds [grid[j-1], grid[j]) (bin 0: below grid[0]); map each to the psi bin
        # holding its left edge (psi bins: searchsorted(edges[1:-1], x, side="right")).
        k = max(self.psi_fractions.size, 1)
        left = np.concatenate([[-np.inf], self.grid])
        self.grid_to_psi = (
            np.minimum(np.searchsorted(e[1:-1], left, side="right"), k - 1)
            if e.size >= 2
            else np.zeros(self.grid.size + 1, dtype=np.int64)
        )

    @property
    def scale(self) -> float:
        """What normalises the Wasserstein distance: the std (else the range, else 1)."""
        if self.std and self.std > 0:
            return float(self.std)
        span = self.max - self.min
        return float(span) if span > 0 else 1.0

    def bins(self, x: np.ndarray) -> np.ndarray:
        """Grid bin of each (present) value."""
        return np.searchsorted(self.grid, x, side="right")

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> NumericReference:
        if d.get("sample") is not None:
            x = np.asarray([np.nan if v is None else v for v in d["sample"]], dtype=np.float64)
            return cls.from_values(name, x)
        pct = np.asarray(d.get("percentiles") or [], dtype=np.float64)
        hist = d.get("histogram") or {}
        edges = np.asarray(hist.get("edges") or [], dtype=np.float64)
        if hist.get("fractions") is not None:
            fr = np.asarray(hist["fractions"], dtype=np.float64)
        else:
            fr = np.asarray(hist.get("counts") or [], dtype=np.float64)
            fr = fr / fr.sum() if fr.sum() > 0 else fr
        if pct.size < 2 and edges.size < 2:
            raise ValidationError(
                f"reference profile of {name!r} has neither percentiles nor histogram edges "
                "(rule: a numeric entry needs one of them, or a raw sample)",
                field=f"features.{name}",
                rule="percentiles|histogram|sample",
            )
        if edges.size >= 2 and fr.size != edges.size - 1:
            raise ValidationError(
                f"reference profile of {name!r}: {edges.size} edges for {fr.size} bins "
                "(rule: len(edges) == len(fractions) + 1)",
                field=f"features.{name}.histogram",
                rule="len(edges) == len(fractions) + 1",
            )
        if pct.size < 2:  # derive a coarse CDF from the histogram
            pct = np.interp(np.linspace(0, 1, 101), np.concatenate([[0], np.cumsum(fr)]), edges)
        if edges.size < 2:
            edges = pct[::10]
            fr = np.full(edges.size - 1, 1.0 / (edges.size - 1))
        lo = d.get("min")
        hi = d.get("max")
        mean = d.get("mean")
        std = d.get("std")
        return cls(
            name=name,
            percentiles=pct,
            psi_edges=edges,
            psi_fractions=fr,
            min=float(pct[0] if lo is None else lo),
            max=float(pct[-1] if hi is None else hi),
            mean=float(mean if mean is not None else np.mean(pct)),
            std=float(std if std is not None else 0.0),
            missing_rate=float(d.get("missing_rate") or 0.0),
            count=int(d.get("count") or 0),
        )

    @classmethod
    def from_values(cls, name: str, values: np.ndarray, bins: int = 10) -> NumericReference:
        """Profile raw values (NaN = missing), as training does."""
        x = np.asarray(values, dtype=np.float64)
        present = x[~np.isnan(x)]
        if present.size == 0:
            raise ValidationError(
                f"reference sample of {name!r} has no values",
                field=f"features.{name}.sample",
                rule="non-empty",
            )
        pct = np.percentile(present, np.arange(101))
        edges = np.unique(np.percentile(present, np.linspace(0, 100, bins + 1)))
        if edges.size < 2:
            edges = np.array([edges[0], edges[0]])
        k = edges.size - 1
        idx = np.minimum(np.searchsorted(edges[1:-1], present, side="right"), k - 1)
        fr = np.bincount(idx, minlength=k) / present.size
        return cls(
            name=name,
            percentiles=pct,
            psi_edges=edges,
            psi_fractions=fr,
            min=float(present.min()),
            max=float(present.max()),
            mean=float(present.mean()),
            std=float(present.std()),
            missing_rate=float(1 - present.size / x.size),
            count=int(present.size),
        )


@dataclass
class CategoricalReference:
    """A categorical feature's training distribution (top categories + the rest)."""

    name: str
    frequencies: dict[str, float]
    other_fraction: float
    missing_rate: float
    cardinality: int
    categories: list[str] = field(init=False)
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.categories = list(self.frequencies)
        self.index = {c: i for i, c in enumerate(self.categories)}

    @property
    def complete(self) -> bool:
        """Whether every training category is listed (then an unlisted one is 'unseen')."""
        return self.other_fraction <= 0 and self.cardinality <= len(self.categories)

    @property
    def expected(self) -> np.ndarray:
        """Reference fractions over ``categories + [OTHER]``."""
        return np.asarray([*self.frequencies.values(), max(self.other_fraction, 0.0)])

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> CategoricalReference:
        if d.get("sample") is not None:
            keys = [category_key(v) for v in d["sample"]]
            present = [k for k in keys if k is not None]
            counts: dict[str, int] = {}
            for k in present:
                counts[k] = counts.get(k, 0) + 1
            n = len(present) or 1
            return cls(
                name=name,
                frequencies={k: c / n for k, c in counts.items()},
                other_fraction=0.0,
                missing_rate=1 - len(present) / max(len(keys), 1),
                cardinality=len(counts),
            )
        freqs = d.get("frequencies")
        if not isinstance(freqs, Mapping):
            raise ValidationError(
                f"reference profile of {name!r} has no frequencies "
                "(rule: a categorical entry needs frequencies or a raw sample)",
                field=f"features.{name}.frequencies",
                rule="dict",
            )
        freqs = {str(k): float(v) for k, v in freqs.items()}
        other = d.get("other_fraction")
        if other is None:
            other = max(0.0, 1.0 - sum(freqs.values()))
        return cls(
            name=name,
            frequencies=freqs,
            other_fraction=float(other),
            missing_rate=float(d.get("missing_rate") or 0.0),
            cardinality=int(d.get("cardinality") or len(freqs)),
        )


@dataclass
class ReferenceProfile:
    """All features of one model version (plus the prediction, when profiled)."""

    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    prediction: NumericReference | None = None
    positive_rate: float | None = None

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        """Parse a ``reference_profile.json`` document (ValidationError naming a bad entry)."""
        if not isinstance(d, Mapping) or not isinstance(d.get("features", {}), Mapping):
            raise ValidationError(
                "reference profile is not an object with 'features' "
                "(rule: raymlp.reference_profile/v1)",
                field="features",
            )
        numeric: dict[str, NumericReference] = {}
        categorical: dict[str, CategoricalReference] = {}
        for name, entry in (d.get("features") or {}).items():
            kind = (entry or {}).get("kind")
            if kind == "numeric":
                numeric[name] = NumericReference.from_dict(name, entry)
            elif kind == "categorical":
                categorical[name] = CategoricalReference.from_dict(name, entry)
            else:
                raise ValidationError(
                    f"reference profile feature {name!r} has kind {kind!r} "
                    "(rule: numeric or categorical)",
                    field=f"features.{name}.kind",
                    value=kind,
                    rule="numeric|categorical",
                )
        pred = d.get("prediction")
        prediction = None
        if isinstance(pred, Mapping) and (
            pred.get("percentiles")
            or pred.get("sample")
            or (pred.get("histogram") or {}).get("edges")
        ):
            prediction = NumericReference.from_dict(PREDICTION_FEATURE, pred)
        label = d.get("label") or {}
        return cls(
            numeric=numeric,
            categorical=categorical,
            prediction=prediction,
            positive_rate=label.get("positive_rate"),
        )
