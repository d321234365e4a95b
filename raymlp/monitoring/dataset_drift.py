"""Drift between two whole datasets (reference vs current), vectorised across all features.

The live monitor compares windows of traffic to a small saved profile; this module compares
two large tables directly (e.g. a month of the prediction log to the training set, and the
drift benchmark). One pass per dataset, in row chunks, bins every value of every feature into
``bins`` fine equal-width bins over the reference's robust range (0.1%–99.9% quantiles of a
subsample) plus two open tail bins, with a single ``np.bincount`` per chunk. From the two
histograms it derives, per feature:

* PSI on reference deciles (decile boundaries snapped to fine-bin edges, same bins both sides);
* KS D (largest CDF gap at the fine edges) and its asymptotic p-value (context only);
* Wasserstein-1 (exact under within-bin uniformity, tails via exact sums) / reference std.

A feature drifts when an effect size is large — PSI ≥ ``psi_threshold`` or normed Wasserstein
≥ ``wasserstein_threshold`` — and the shift is real: KS p-value < ``p_value``. At large n every
p-value is tiny (a KS test alone flags shifts too small to matter), so effect sizes decide; at
small n the test keeps sampling noise from being called drift::

    rows = compare_numeric(ref, cur, names=[f"f{i}" for i in range(ref.shape[1])])
    [r["feature"] for r in rows if r["drifted"]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from raymlp.config import DriftSettings
from raymlp.errors import ValidationError
from raymlp.monitoring.stats import ks_pvalue, psi, wasserstein_binned

__all__ = ["BinnedProfile", "profile_numeric", "histogram", "compare_numeric"]


@dataclass
class BinnedProfile:
    """The reference side: bins, its histogram and moments (reusable across comparisons)."""

    names: list[str]
    lo: np.ndarray  # (f,)
    hi: np.ndarray  # (f,)
    bins: int
    counts: np.ndarray  # (f, bins + 2): below-range, fine bins, above-range
    below_sum: np.ndarray  # (f,) sum of (lo - x) over x < lo
    above_sum: np.ndarray  # (f,) sum of (x - hi) over x > hi
    n: np.ndarray  # (f,) present values
    missing: np.ndarray  # (f,)
    std: np.ndarray  # (f,)
    decile_cuts: np.ndarray  # (f, 9) fine-edge indexes of the PSI boundaries

    @property
    def edges(self) -> np.ndarray:
        """(f, bins + 1) fine bin edges."""
        t = np.linspace(0.0, 1.0, self.bins + 1)
        return self.lo[:, None] + (self.hi - self.lo)[:, None] * t[None, :]


def _as_matrix(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValidationError(
            f"{what} must be 2-D (rows x features), got shape {a.shape}", field=what, rule="2-D"
        )
    return a


def histogram(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int, chunk_rows: int = 65536
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature histograms of ``x`` (rows × f) on ``bins`` equal bins over [lo, hi] plus
    an open tail bin on each side: ``(counts (f, bins+2), below_sum, above_sum, missing)``."""
    n_rows, f = x.shape
    width = bins + 2
    counts = np.zeros(f * width, np.int64)
    below = np.zeros(f)
    above = np.zeros(f)
    missing = np.zeros(f, np.int64)
    span = np.where(hi > lo, hi - lo, 1.0)
    scale = bins / span
    offsets = (np.arange(f, dtype=np.int64) * width + 1)[None, :]  # +1: the below bin
    for s in range(0, n_rows, chunk_rows):
        c = x[s : s + chunk_rows]
        nan = np.isnan(c)
        has_nan = bool(nan.any())
        z = c - lo
        z *= scale
        # tails: few values, so gather them sparsely instead of a full pass each
        for mask, out, sign, edge in ((z < 0, below, -1.0, lo), (z >= bins, above, 1.0, hi)):
            if mask.any():
                r, col = np.nonzero(mask)
                out += np.bincount(col, weights=sign * (c[r, col] - edge[col]), minlength=f)
        np.floor(z, out=z)
        np.clip(z, -1, bins, out=z)  # -1: below lo, bins: above hi
        if has_nan:
            z[nan] = 0  # dropped below; keeps the cast clean
        idx = z.astype(np.int64)
        idx += offsets
        if has_nan:
            missing += nan.sum(axis=0)
            idx = idx[~nan]
        counts += np.bincount(idx.ravel(), minlength=f * width)
    return counts.reshape(f, width), below, above, missing


def profile_numeric(
    reference: Any,
    names: Sequence[str] | None = None,
    bins: int = 2000,
    sample_rows: int = 20_000,
    seed: int = 0,
    chunk_rows: int = 65536,
) -> BinnedProfile:
    """Profile a reference matrix (rows × features; NaN = missing)."""
    x = _as_matrix(reference, "reference")
    n_rows, f = x.shape
    names = list(names) if names is not None else [f"f{i}" for i in range(f)]
    if len(names) != f:
        raise ValidationError(
            f"{len(names)} names for {f} features", field="names", rule="one name per column"
        )
    rng = np.random.default_rng(seed)
    sub = x if n_rows <= sample_rows else x[rng.choice(n_rows, sample_rows, replace=False)]
    lo, hi = np.nanquantile(sub, [0.001, 0.999], axis=0)
    lo = np.nan_to_num(lo)
    hi = np.where(np.isnan(hi) | (hi <= lo), lo + 1.0, hi)
    counts, below, above, missing = histogram(x, lo, hi, bins, chunk_rows)
    n = n_rows - missing
    std = np.nanstd(x, axis=0) if missing.any() else x.std(axis=0)
    # PSI boundaries: reference deciles, snapped to fine edges (cumulative mass over edges)
    cdf = np.cumsum(counts, axis=1) / np.maximum(n, 1)[:, None]  # P(X < edge j) at j=0..bins
    cuts = np.stack(
        [np.argmin(np.abs(cdf[:, :-1] - q), axis=1) for q in np.arange(1, 10) / 10], axis=1
    )
    return BinnedProfile(
        names=names,
        lo=lo,
        hi=hi,
        bins=bins,
        counts=counts,
        below_sum=below,
        above_sum=above,
        n=n,
        missing=missing,
        std=std,
        decile_cuts=cuts,
    )


def _psi_groups(counts: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Sum fine bins (with tails) into the 10 PSI bins given 9 cut positions per feature."""
    cum = np.concatenate([np.zeros((counts.shape[0], 1)), np.cumsum(counts, axis=1)], axis=1)
    # cut j means: boundary after cumulative index j+1 (tails bin 0 always in the first group)
    at = np.take_along_axis(cum, cuts + 1, axis=1)
    bounds = np.concatenate([np.zeros((counts.shape[0], 1)), at, cum[:, -1:]], axis=1)
    return np.diff(bounds, axis=1)


def compare_numeric(
    reference: Any,
    current: Any,
    names: Sequence[str] | None = None,
    settings: DriftSettings | None = None,
    bins: int = 2000,
    chunk_rows: int = 65536,
) -> list[dict[str, Any]]:
    """Per-feature drift of ``current`` against ``reference`` (a matrix or a
    :class:`BinnedProfile`); one dict per feature with psi, ks, ks_p, wasserstein, drifted."""
    s = settings or DriftSettings()
    prof = (
        reference
        if isinstance(reference, BinnedProfile)
        else profile_numeric(reference, names, bins, chunk_rows=chunk_rows)
    )
    cur = _as_matrix(current, "current")
    if cur.shape[1] != len(prof.names):
        raise ValidationError(
            f"current has {cur.shape[1]} features, reference {len(prof.names)}",
            field="current",
            rule="same columns",
        )
    counts, below, above, missing = histogram(cur, prof.lo, prof.hi, prof.bins, chunk_rows)
    n = cur.shape[0] - missing
    p_ref = _psi_groups(prof.counts, prof.decile_cuts)
    p_cur = _psi_groups(counts, prof.decile_cuts)
    psis = psi(p_ref, p_cur)
    # CDFs at the fine edges (P(X < edge)); column 0 is the below-range tail
    cdf_ref = np.cumsum(prof.counts, axis=1)[:, :-1] / np.maximum(prof.n, 1)[:, None]
    cdf_cur = np.cumsum(counts, axis=1)[:, :-1] / np.maximum(n, 1)[:, None]
    ks = np.max(np.abs(cdf_ref - cdf_cur), axis=1)
    ks_p = ks_pvalue(ks, prof.n, n)
    inner = wasserstein_binned(prof.edges, cdf_ref, cdf_cur)
    tails = np.abs(prof.below_sum / np.maximum(prof.n, 1) - below / np.maximum(n, 1)) + np.abs(
        prof.above_sum / np.maximum(prof.n, 1) - above / np.maximum(n, 1)
    )
    scale = np.where(prof.std > 0, prof.std, 1.0)
    wass = (inner + tails) / scale
    rows = []
    for i, name in enumerate(prof.names):
        drifted = bool(
            n[i] >= s.min_samples
            and ks_p[i] < s.p_value
            and (psis[i] >= s.psi_threshold or wass[i] >= s.wasserstein_threshold)
        )
        rows.append(
            {
                "feature": name,
                "kind": "numeric",
                "n": int(n[i]),
                "psi": float(psis[i]),
                "ks": float(ks[i]),
                "ks_p": float(ks_p[i]),
                "wasserstein": float(wass[i]),
                "drifted": drifted,
                "missing_ratio": float(missing[i] / cur.shape[0]) if cur.shape[0] else None,
            }
        )
    return rows
