"""Drift and model-quality statistics, vectorised over features (numpy/scipy).

Every function takes arrays whose **last axis** is the distribution (bins, categories or
quantile levels) and whose leading axes are anything (features, windows...), so one call scores
a hundred features at once::

    >>> import numpy as np
    >>> ref = np.array([[0.25, 0.25, 0.25, 0.25]])
    >>> cur = np.array([[0.40, 0.30, 0.20, 0.10]])
    >>> round(float(psi(ref, cur)[0]), 3)
    0.228

Which statistic decides: **effect sizes** — PSI (population stability index), the Wasserstein
distance normalised by the reference standard deviation, the Jensen–Shannon distance — carry the
drift verdict. **p-values** (Kolmogorov–Smirnov, chi-square) are reported beside them as
context: with a million rows a KS test rejects shifts far too small to matter.
"""

from __future__ import annotations

import numpy as np

from raymlp._private.values import histogram_auc

__all__ = [
    "PSI_EPS",
    "normalize",
    "psi",
    "js_distance",
    "ks_statistic",
    "ks_pvalue",
    "chi_square",
    "wasserstein_binned",
    "wasserstein_quantiles",
    "two_proportion_test",
    "auc_binned",
    "quantile_from_histogram",
]

#: Floor applied to empty bins before the PSI logarithm (Evidently and most tools use 1e-4).
PSI_EPS = 1e-4


def normalize(counts: np.ndarray) -> np.ndarray:
    """Counts → fractions along the last axis (all-zero rows stay zero)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    return np.divide(c, total, out=np.zeros_like(c), where=total > 0)


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = PSI_EPS) -> np.ndarray:
    """Population stability index ``sum((a - e) * ln(a / e))`` over the last axis.

    Inputs are counts or fractions (normalised here); empty bins are floored at ``eps``.
    Rule of thumb: < 0.1 stable, 0.1–0.2 moderate, >= 0.2 significant shift.
    """
    e = np.maximum(normalize(expected), eps)
    a = np.maximum(normalize(actual), eps)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon distance (square root of the divergence, base 2: in [0, 1])."""
    p = normalize(p)
    q = normalize(q)
    m = 0.5 * (p + q)
    # rel_entr(x, y) = x log(x / y), 0 where x == 0: no eps needed.
    from scipy import special  # imported on use: scipy.stats costs ~1 s per worker process

    div = 0.5 * (special.rel_entr(p, m).sum(axis=-1) + special.rel_entr(q, m).sum(axis=-1))
    return np.sqrt(np.maximum(div / np.log(2.0), 0.0))


def ks_statistic(cdf_ref: np.ndarray, cdf_cur: np.ndarray) -> np.ndarray:
    """Kolmogorov–Smirnov D: the largest gap between two CDFs sampled at the same points."""
    return np.max(np.abs(np.asarray(cdf_ref) - np.asarray(cdf_cur)), axis=-1)


def ks_pvalue(
    d: np.ndarray | float, n: np.ndarray | float, m: np.ndarray | float | None = None
) -> np.ndarray:
    """Asymptotic p-value of a two-sample KS statistic ``d`` with sample sizes ``n`` and ``m``
    (``m`` None: one sample against a known distribution), with Stephens' small-n correction."""
    d = np.asarray(d, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    en = n if m is None else n * np.asarray(m, dtype=np.float64) / np.maximum(n + m, 1.0)
    en = np.maximum(en, 1e-12)
    sq = np.sqrt(en)
    from scipy import special

    return np.clip(special.kolmogorov((sq + 0.12 + 0.11 / sq) * d), 0.0, 1.0)


def chi_square(
    expected_fractions: np.ndarray, observed_counts: np.ndarray, eps: float = PSI_EPS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson chi-square goodness of fit of ``observed_counts`` to ``expected_fractions``.

    Returns ``(statistic, dof, p_value)`` over the last axis; categories the reference never
    saw get expected mass ``eps`` (so a brand-new category is a strong signal, not a crash).
    """
    obs = np.asarray(observed_counts, dtype=np.float64)
    n = obs.sum(axis=-1, keepdims=True)
    exp = np.maximum(normalize(expected_fractions), eps)
    exp = exp / exp.sum(axis=-1, keepdims=True) * n
    stat = np.sum(np.divide((obs - exp) ** 2, exp, out=np.zeros_like(obs), where=exp > 0), axis=-1)
    dof = np.maximum(np.count_nonzero(np.asarray(expected_fractions) > 0, axis=-1) - 1, 1)
    from scipy import stats as sps

    return stat, dof, sps.chi2.sf(stat, dof)


def wasserstein_binned(edges: np.ndarray, cdf_ref: np.ndarray, cdf_cur: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance ``∫|F_ref - F_cur| dx`` from two CDFs sampled at ``edges``
    (values uniform within each bin: the CDF gap is linear between edges, so each bin's
    integral is exact for that model, including a sign change inside the bin)."""
    e = np.asarray(edges, dtype=np.float64)
    g = np.asarray(cdf_ref, dtype=np.float64) - np.asarray(cdf_cur, dtype=np.float64)
    w = np.diff(e, axis=-1)
    d0, d1 = g[..., :-1], g[..., 1:]
    same = d0 * d1 >= 0
    a0, a1 = np.abs(d0), np.abs(d1)
    tot = a0 + a1
    cross = np.divide(d0 * d0 + d1 * d1, 2 * tot, out=np.zeros_like(tot), where=tot > 0)
    return np.sum(w * np.where(same, 0.5 * tot, cross), axis=-1)


def wasserstein_quantiles(q_ref: np.ndarray, q_cur: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance from quantile functions sampled at the same evenly spaced levels
    (``W1 = ∫_0^1 |Q_ref(u) - Q_cur(u)| du``, trapezoid rule)."""
    diff = np.abs(np.asarray(q_ref, dtype=np.float64) - np.asarray(q_cur, dtype=np.float64))
    k = diff.shape[-1]
    if k < 2:
        return diff[..., 0] if k else np.zeros(diff.shape[:-1])
    return np.trapezoid(diff, dx=1.0 / (k - 1), axis=-1)


def two_proportion_test(x1: float, n1: float, x2: float, n2: float) -> tuple[float, float]:
    """One-sided test that rate ``x1/n1`` exceeds ``x2/n2``: returns ``(z, p_value)``.

    Uses the pooled two-proportion z statistic; with no events on either side p is 1.
    """
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 0.0, 1.0 if p1 <= p2 else 0.0
    z = (p1 - p2) / np.sqrt(var)
    from scipy import stats as sps

    return float(z), float(sps.norm.sf(z))


def auc_binned(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float | None:
    """ROC AUC from histograms of the score for positives and negatives over the same bins
    (pairs in the same bin count as ties, 0.5). None when either class is absent."""
    return histogram_auc(pos_hist, neg_hist)


def quantile_from_histogram(edges: np.ndarray, counts: np.ndarray, q: float) -> float | None:
    """The ``q`` quantile of values histogrammed into ``counts`` over bins ``edges``
    (len(counts) == len(edges) - 1), interpolated linearly inside the bin (as Prometheus'
    ``histogram_quantile`` does). None when empty."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return None
    cum = np.cumsum(c)
    target = q * total
    i = int(np.searchsorted(cum, target, side="left"))
    i = min(i, len(c) - 1)
    lo, hi = float(edges[i]), float(edges[i + 1])
    before = cum[i] - c[i]
    frac = (target - before) / c[i] if c[i] > 0 else 1.0
    return float(lo + (hi - lo) * min(max(float(frac), 0.0), 1.0))
