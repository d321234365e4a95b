"""Rule-based answers: the step of the fallback chain after the fallback model.

Rules come from the serve config (:class:`~raymlp.config.FallbackRule`). The first rule whose
conditions all hold on the request's features answers; a condition on a feature the request
does not carry never holds (except ``is_null: true``)::

    >>> from raymlp.config import FallbackRule
    >>> rules = [FallbackRule(name="new", when={"tenure_months": {"lt": 6}}, prediction="churn",
    ...                       probability=0.8)]
    >>> match_rule(rules, {"tenure_months": 2}).name
    'new'
    >>> match_rule(rules, {"tenure_months": 40}) is None
    True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from raymlp.config import FallbackRule

__all__ = ["match_rule", "condition_holds"]

_MISSING = object()


def _is_null(value: Any) -> bool:
    return value is None or value is _MISSING or (isinstance(value, float) and math.isnan(value))


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or _is_null(value):
        return None
    return float(value)


def _holds(op: str, value: Any, operand: Any) -> bool:
    if op == "is_null":
        return _is_null(value) == bool(operand)
    if _is_null(value):
        return False
    if op == "eq":
        return value == operand
    if op == "ne":
        return value != operand
    if op == "in":
        return value in operand
    if op == "not_in":
        return value not in operand
    x = _num(value)
    if x is None:
        return False
    if op == "lt":
        return x < operand
    if op == "le":
        return x <= operand
    if op == "gt":
        return x > operand
    if op == "ge":
        return x >= operand
    return False


def condition_holds(condition: Any, value: Any) -> bool:
    """Whether one feature's ``value`` meets ``condition`` (a value, or ``{op: operand}``)."""
    if isinstance(condition, Mapping):
        return all(_holds(op, value, operand) for op, operand in condition.items())
    return _holds("eq", value, condition)


def match_rule(
    rules: Sequence[FallbackRule], features: Mapping[str, Any] | None
) -> FallbackRule | None:
    """The first rule that holds on ``features`` (None: no rule does)."""
    features = features or {}
    for rule in rules:
        if all(
            condition_holds(cond, features.get(name, _MISSING)) for name, cond in rule.when.items()
        ):
            return rule
    return None
