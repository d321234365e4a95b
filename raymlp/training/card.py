"""The model card (``card.md``): what the model is, what it was trained on, how well it does.

Rendered by the training job from facts it already has; stored in the artifact and with the
registered version (``raymlp models show``)::

    >>> text = render_card(CardFacts(model_name="customer-churn", kind="primary", ...))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CardFacts", "render_card"]

_MAIN_METRICS = ("auc", "accuracy", "log_loss", "brier", "ece", "precision", "recall", "f1")


@dataclass
class CardFacts:
    """Everything the card shows."""

    model_name: str
    kind: str  # primary | fallback
    description: str = ""
    owner: str = ""
    label: str = ""
    class_names: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    entity_table: str = ""
    feature_versions: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    positive_rate: dict[str, float] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)
    int8: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    run_id: str | None = None
    code_commit: str | None = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "—" if v is None else str(v)


def render_card(f: CardFacts) -> str:
    """Markdown text of the card."""
    lines = [f"# Model card: {f.model_name}", ""]
    role = (
        "fallback model (served when the primary cannot answer)"
        if f.kind == "fallback"
        else "primary model"
    )
    lines += [
        f"**Role:** {role}  ",
        f"**Owner:** {f.owner or '—'}  ",
        f"**Training run:** {f.run_id or '—'}  ",
        f"**Code commit:** {f.code_commit or '—'}",
        "",
    ]
    if f.description:
        lines += [f.description, ""]
    lines += [
        "## Intended use",
        "",
        f"Binary classification of `{f.label}` into {f.class_names}; the output is the "
        "probability of the second class. Use on the population the training data covers; "
        "watch the drift report of the monitor for inputs that leave the reference profile.",
        "",
    ]
    lines += ["## Inputs", "", "| feature | dtype | source |", "|---|---|---|"]
    for i in f.inputs:
        lines.append(f"| `{i['name']}` | {i['dtype']} | {i.get('description') or '—'} |")
    lines += [
        "",
        "## Training data",
        "",
        f"- entity table: `{f.entity_table}`",
        "- feature tables (Delta versions): "
        + (", ".join(f"`{k}`@{v}" for k, v in f.feature_versions.items()) or "—"),
        f"- split by entity (seed {f.split.get('seed')}, fractions "
        f"{f.split.get('fractions')}): "
        + ", ".join(
            f"{k} {v} rows ({f.positive_rate.get(k, 0):.1%} positive)" for k, v in f.rows.items()
        ),
        "",
    ]
    lines += ["## Model", ""]
    lines += [f"- {k}: `{v}`" for k, v in f.model.items()]
    lines += [f"- {k}: `{v}`" for k, v in f.training.items()]
    lines += ["", "## Evaluation (test split)", "", "| metric | value |", "|---|---|"]
    lines += [
        f"| {m} | {_fmt(f.test_metrics.get(m))} |" for m in _MAIN_METRICS if m in f.test_metrics
    ]
    cal = f.test_metrics.get("calibration") or []
    if cal:
        lines += [
            "",
            "Calibration (equal-width bins):",
            "",
            "| bin | rows | mean predicted | observed |",
            "|---|---|---|---|",
        ]
        for b in cal:
            if b["count"]:
                lines.append(
                    f"| {b['bin'][0]:.1f}–{b['bin'][1]:.1f} | {b['count']} | "
                    f"{_fmt(b['mean_predicted'])} | {_fmt(b['observed_rate'])} |"
                )
    if f.int8:
        lines += [
            "",
            "## INT8 variant",
            "",
            f"Dynamic-quantized copy (`variant='int8'`): test AUC delta "
            f"{_fmt(f.int8.get('auc_delta'))}, accuracy delta "
            f"{_fmt(f.int8.get('accuracy_delta'))}; recommended for CPU serving: "
            f"{'yes' if f.int8.get('recommended') else 'no'}.",
        ]
    if f.fallback:
        lines += [
            "",
            "## Fallback",
            "",
            f"Serves with fallback `{f.fallback.get('name')}` version "
            f"{f.fallback.get('version')} (test AUC {_fmt(f.fallback.get('auc'))}).",
        ]
    lines += [
        "",
        "## Limitations",
        "",
        "Trained on historical data at the recorded table versions; performance can "
        "degrade when the input distribution drifts. Probabilities are calibrated only as "
        "well as the calibration table shows.",
        "",
    ]
    return "\n".join(lines)
