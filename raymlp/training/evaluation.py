"""Evaluation on a held-out split through the serving code path.

A :class:`~raymlp.predictor.artifact.Predictor` (preprocessing + network, exactly what serving
loads) scores the split's raw feature rows batch by batch, so the reported test metrics are the
metrics of the artifact as it will be served::

    >>> metrics, y, p = evaluate(load_predictor(artifact_dir), prepared.raw["test"])
    >>> metrics["auc"], metrics["ece"]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raymlp.training.classification_metrics import binary_metrics, calibration_table
from raymlp.training.data import LABEL_COL

__all__ = ["evaluate", "score"]


def score(predictor: Any, raw_ds: Any, batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probabilities)`` of every row of ``raw_ds`` (streamed)."""
    ys: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    for batch in raw_ds.iter_batches(batch_format="pyarrow", batch_size=batch_size):
        ps.append(predictor.predict_proba(batch))
        ys.append(batch.column(LABEL_COL).to_numpy(zero_copy_only=False).astype(np.float64))
    if not ys:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ys), np.concatenate(ps)


def evaluate(predictor: Any, raw_ds: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics (``binary_metrics`` + ``calibration`` table) of ``predictor`` on ``raw_ds``."""
    y, p = score(predictor, raw_ds)
    metrics = binary_metrics(y, p)
    metrics["calibration"] = calibration_table(y, p)
    return metrics, y, p
