"""Tiny value logic that must agree across processes: written once, imported by all.

Training fits its vocabulary and reference profile with :func:`category_key`; the Serve gateway's
logged features are later sliced and drift-scored by the monitor with the same function, so a
category seen in training is the same category in monitoring (two drifted copies would be
training/serving skew). :func:`histogram_auc` is the one ROC AUC from per-class score
histograms, used by validation inside training and by the monitor's live accuracy windows::

    >>> category_key(2.0), category_key(True), category_key(float("nan"))
    ('2', 'true', None)
    >>> histogram_auc([0, 1], [1, 0])
    1.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["category_key", "histogram_auc"]


def category_key(value: Any) -> str | None:
    """The canonical string of a categorical value (None for missing), identical whether the
    value came from Arrow, JSON or Python: ``True`` → ``"true"``, ``2.0`` → ``"2"``."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value)


def histogram_auc(pos_hist: Any, neg_hist: Any) -> float | None:
    """ROC AUC from histograms of the score for positives and negatives over the same ascending
    bins (pairs in the same bin count as ties, one half). Exact up to the bin width; None when
    either class is absent (each caller maps that onto its own contract)."""
    pos = np.asarray(pos_hist, dtype=np.float64)
    neg = np.asarray(neg_hist, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (n_pos * n_neg))
