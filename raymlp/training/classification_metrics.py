"""Binary-classification metrics: exact on arrays (test split) and mergeable histograms (training).

``binary_metrics`` is what the job reports on the test split and what the promotion gate compares::

    >>> import numpy as np
    >>> from raymlp.training.classification_metrics import binary_metrics
    >>> m = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> round(m["auc"], 2), m["accuracy"]
    (0.75, 0.75)

``ScoreHistogram`` is the distributed form: each Ray Train worker bins its validation scores per
class, the bins are summed across workers (one all-reduce), and AUC/log-loss/accuracy come out of
the sum, so validation never gathers predictions on one worker.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raymlp._private.values import histogram_auc

__all__ = [
    "roc_auc",
    "log_loss",
    "brier_score",
    "expected_calibration_error",
    "binary_metrics",
    "calibration_table",
    "HIGHER_IS_BETTER",
    "auc_from_histograms",
]

_EPS = 1e-7

#: For each metric name of :func:`binary_metrics`: whether a larger value is better.
HIGHER_IS_BETTER = {
    "auc": True,
    "accuracy": True,
    "log_loss": False,
    "brier": False,
    "ece": False,
}


def _check(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_prob, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.shape[0]}) and scores ({p.shape[0]}) differ in length")
    return y, p


def roc_auc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class."""
    y, p = _check(y_true, y_prob)
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    ranks = np.empty(p.size, dtype=np.float64)
    # Average rank over runs of equal scores: ties count one half, as the ROC definition wants.
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7]."""
    y, p = _check(y_true, y_prob)
    if y.size == 0:
        return float("nan")
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier_score(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean squared error of the probability."""
    y, p = _check(y_true, y_prob)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10) -> float:
    """ECE: |mean predicted − observed rate| per equal-width bin, weighted by the bin's share."""
    y, p = _check(y_true, y_prob)
    if y.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    idx = np.clip(idx, 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    nz = count > 0
    return float(np.sum(np.abs(sum_p[nz] - sum_y[nz])) / y.size)


def calibration_table(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10) -> list[dict]:
    """Per equal-width bin: count, mean predicted probability, observed positive rate."""
    y, p = _check(y_true, y_prob)
    idx = np.clip(np.minimum((p * bins).astype(np.int64), bins - 1), 0, bins - 1)
    out = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        out.append(
            {
                "bin": [b / bins, (b + 1) / bins],
                "count": n,
                "mean_predicted": float(p[sel].mean()) if n else None,
                "observed_rate": float(y[sel].mean()) if n else None,
            }
        )
    return out


def binary_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """AUC, accuracy, log-loss, Brier, ECE, precision/recall/F1 at ``threshold``, counts."""
    y, p = _check(y_true, y_prob)
    pred = p >= threshold
    pos = y == 1
    tp = float(np.sum(pred & pos))
    fp = float(np.sum(pred & ~pos))
    fn = float(np.sum(~pred & pos))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "auc": roc_auc(y, p),
        "accuracy": float(np.mean(pred == pos)) if y.size else float("nan"),
        "log_loss": log_loss(y, p),
        "brier": brier_score(y, p),
        "ece": expected_calibration_error(y, p),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "positive_rate": float(y.mean()) if y.size else float("nan"),
        "rows": int(y.size),
    }


def auc_from_histograms(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float:
    """AUC from per-class score histograms over the same ascending bins (ties within a bin
    count one half; see :func:`raymlp._private.values.histogram_auc`). Exact up to the bin
    width; used for validation inside training. NaN when either class is absent."""
    auc = histogram_auc(pos_hist, neg_hist)
    return float("nan") if auc is None else auc
