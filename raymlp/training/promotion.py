"""The promotion gate: does the new model beat the current holder of the alias on the same test
split by the configured margin? Pure logic; the job acts on the decision by *requesting*
promotion (the registry enforces approvals — the job never promotes past them)::

    >>> d = decide({"auc": 0.81}, {"auc": 0.80}, metric="auc", margin=0.02)
    >>> d.request, d.reason
    (False, 'auc 0.8100 does not beat production 0.8000 by the margin 0.02 (delta +0.0100)')
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from raymlp.training.classification_metrics import HIGHER_IS_BETTER

__all__ = ["GateDecision", "decide"]


@dataclass
class GateDecision:
    """The gate's verdict. ``delta`` is the improvement (positive = better), None without a
    current model."""

    request: bool
    reason: str
    metric: str
    new_value: float | None
    current_value: float | None = None
    current_version: int | None = None
    delta: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bad(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def decide(
    new_metrics: dict[str, Any],
    current_metrics: dict[str, Any] | None,
    *,
    metric: str = "auc",
    margin: float = 0.0,
    min_value: float | None = None,
    alias: str = "production",
    current_version: int | None = None,
) -> GateDecision:
    """Compare ``new_metrics[metric]`` with the current holder's (both on the same test split).

    The new model must be strictly better, and better by at least ``margin``; with no current
    holder it must only reach ``min_value`` (when set). A missing or NaN metric never wins.
    """
    higher = HIGHER_IS_BETTER[metric]
    new: Any = new_metrics.get(metric)
    if _bad(new):
        return GateDecision(False, f"the new model has no {metric} on the test split", metric, None)
    new = float(new)
    if min_value is not None and (new < min_value if higher else new > min_value):
        return GateDecision(
            False,
            f"{metric} {new:.4f} misses the bar {min_value} (promotion.min_value)",
            metric,
            new,
            current_version=current_version,
        )
    if current_metrics is None:
        return GateDecision(True, f"no model holds {alias!r}; {metric} {new:.4f}", metric, new)
    cur: Any = current_metrics.get(metric)
    if _bad(cur):
        return GateDecision(
            True,
            f"{alias} has no {metric} on this test split; new {metric} {new:.4f}",
            metric,
            new,
            current_version=current_version,
        )
    cur = float(cur)
    delta = new - cur if higher else cur - new
    wins = delta > 0 and delta >= margin
    verb = "beats" if wins else "does not beat"
    return GateDecision(
        wins,
        f"{metric} {new:.4f} {verb} {alias} {cur:.4f} by the margin {margin:g} (delta {delta:+.4f})",
        metric,
        new,
        cur,
        current_version,
        delta,
    )
