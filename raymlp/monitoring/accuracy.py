"""Model quality from delayed ground truth: accuracy, AUC and fairness slices.

Labels arrive later than predictions (``POST /v1/feedback`` → ``log_feedback``) and are joined
by request id. :func:`label_outcome` decides, for one (prediction, probability, label), whether
the prediction was right and which side of the binary split label and prediction fall on;
cells in :mod:`raymlp.monitoring.windows` accumulate the outcomes, and :func:`fairness_report`
compares slices of one attribute::

    >>> label_outcome("high_risk", 0.8, 1)
    (True, True, True)
    >>> label_outcome("stay", 0.2, 1)
    (False, True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raymlp.monitoring.records import category_key
from raymlp.monitoring.windows import FairnessCell

__all__ = ["label_outcome", "is_positive", "fairness_report", "TRUE_WORDS", "FALSE_WORDS"]

TRUE_WORDS = frozenset({"1", "true", "yes", "positive", "pos"})
FALSE_WORDS = frozenset({"0", "false", "no", "negative", "neg"})


def is_positive(value: Any, positive_label: str | None = None) -> bool | None:
    """Which side of a binary split ``value`` (a label or prediction) is on; None: unknown."""
    if value is None:
        return None
    key = category_key(value)
    if positive_label is not None and key == positive_label:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if value in (0, 1):
            return bool(value)
        return None
    low = str(key).lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    if positive_label is not None:
        return False  # a named class that is not the positive one
    return None


def label_outcome(
    prediction: Any,
    probability: float | None,
    label: Any,
    positive_label: str | None = None,
    threshold: float = 0.5,
) -> tuple[bool | None, bool | None, bool | None]:
    """``(correct, label_positive, predicted_positive)`` for one labelled request.

    The prediction's side comes from the probability when there is one (binary models),
    else from the prediction itself. ``correct`` compares sides when both are known, else the
    canonical strings of prediction and label (multiclass); None when there is no prediction.
    """
    label_pos = is_positive(label, positive_label)
    if probability is not None:
        pred_pos: bool | None = probability >= threshold
    else:
        pred_pos = is_positive(prediction, positive_label)
    if prediction is None and probability is None:
        return None, label_pos, None
    if category_key(prediction) is not None and category_key(prediction) == category_key(label):
        return True, label_pos, pred_pos
    if label_pos is not None and pred_pos is not None:
        return label_pos == pred_pos, label_pos, pred_pos
    if prediction is None:
        return None, label_pos, pred_pos
    return False, label_pos, pred_pos


def fairness_report(
    attribute: str, slices: Mapping[str, FairnessCell], min_requests: int = 1
) -> dict[str, Any]:
    """Per-slice rates and the disparities between slices of ``attribute``.

    ``disparate_impact`` is the lowest positive-prediction rate over the highest (1.0 = parity;
    the "80% rule" flags < 0.8); ``accuracy_gap`` the spread of accuracy over slices with labels;
    ``tpr_gap`` (equal opportunity) the spread of true-positive rates.
    """
    rows: list[dict[str, Any]] = []
    for value, c in sorted(slices.items(), key=lambda kv: -kv[1].requests):
        if c.requests < min_requests and c.labelled == 0:
            continue
        pos = c.tp + c.fn
        neg = c.fp + c.tn
        rows.append(
            {
                "slice": value,
                "requests": c.requests,
                "positive_rate": c.predicted_positive / c.requests if c.requests else None,
                "labelled": c.labelled,
                "accuracy": c.correct / c.labelled if c.labelled else None,
                "tpr": c.tp / pos if pos else None,
                "fpr": c.fp / neg if neg else None,
            }
        )

    def spread(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return max(vals) - min(vals) if len(vals) >= 2 else None

    rates = [r["positive_rate"] for r in rows if r["positive_rate"] is not None]
    di = None
    if len(rates) >= 2 and max(rates) > 0:
        di = min(rates) / max(rates)
    return {
        "attribute": attribute,
        "slices": rows,
        "disparate_impact": di,
        "accuracy_gap": spread("accuracy"),
        "tpr_gap": spread("tpr"),
    }
