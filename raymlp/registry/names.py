"""Naming rules of the registry: model, alias, experiment names, stages, run statuses.

Every check raises :class:`~raymlp.errors.ValidationError` naming the field, the bad value and
the rule, so a bad argument never reaches the event log::

    >>> check_model_name("customer-churn")
    'customer-churn'
    >>> check_stage("prod")
    Traceback (most recent call last):
    raymlp.errors.ValidationError: stage 'prod' is not a stage (rule: one of none, staging, ...)
"""

from __future__ import annotations

import re
from typing import Any

from raymlp.config._base import ALIAS_RE, MODEL_NAME_RE, full_match
from raymlp.errors import ValidationError

__all__ = [
    "STAGES",
    "STAGE_TRANSITIONS",
    "RUN_STATUSES",
    "TERMINAL_RUN_STATUSES",
    "check_model_name",
    "check_alias",
    "check_experiment_name",
    "check_stage",
    "check_version",
    "check_run_status",
    "check_key",
    "check_metric_value",
]

# One definition of the model-name and alias rules, shared with the config models. Every check
# is a full match (``re.fullmatch``): a trailing newline or any other extra character fails.
_NAME_RE = MODEL_NAME_RE
_ALIAS_RE = ALIAS_RE
_KEY_RE = re.compile(r"\A[A-Za-z0-9_.\-/ :]{1,250}\Z")

#: The lifecycle stages of a model version.
STAGES = ("none", "staging", "production", "archived")

#: Stage moves ``set_stage`` allows. ``production`` is entered and left only through the
#: ``production`` alias (promotion, approval, rollback), so the production holder and the
#: version in stage ``production`` are always the same one.
STAGE_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "none": ("staging", "archived"),
    "staging": ("none", "production", "archived"),
    "production": (),
    "archived": ("staging",),
}

RUN_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
TERMINAL_RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


def check_model_name(name: Any, field: str = "name") -> str:
    if not full_match(_NAME_RE, name):
        raise ValidationError(
            f"model name {name!r} is not valid (rule: 1-128 chars of a-z, 0-9, '_', '-', '.', "
            "starting with a letter or digit)",
            field=field,
            value=name,
            rule="model name",
        )
    return name


def check_experiment_name(name: Any) -> str:
    if not full_match(_NAME_RE, name):
        raise ValidationError(
            f"experiment name {name!r} is not valid (rule: 1-128 chars of a-z, 0-9, '_', '-', "
            "'.', starting with a letter or digit)",
            field="experiment",
            value=name,
            rule="experiment name",
        )
    return name


def check_alias(alias: Any) -> str:
    if not full_match(_ALIAS_RE, alias):
        raise ValidationError(
            f"alias {alias!r} is not valid (rule: 1-63 chars of a-z, 0-9, '_' or '-', starting "
            "with a letter, so it can never be mistaken for a version number)",
            field="alias",
            value=alias,
            rule="alias name",
        )
    return alias


def check_stage(stage: Any) -> str:
    if stage not in STAGES:
        raise ValidationError(
            f"stage {stage!r} is not a stage (rule: one of {', '.join(STAGES)})",
            field="stage",
            value=stage,
            rule=f"one of {list(STAGES)}",
        )
    return stage


def check_version(version: Any) -> int:
    """A version number: a positive int (a numeric string is accepted, e.g. from the CLI)."""
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version.strip())
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValidationError(
            f"version {version!r} is not a version number (rule: an integer >= 1)",
            field="version",
            value=version,
            rule="integer >= 1",
        )
    return version


def check_run_status(status: Any) -> str:
    if status not in RUN_STATUSES:
        raise ValidationError(
            f"run status {status!r} is not valid (rule: one of {', '.join(RUN_STATUSES)})",
            field="status",
            value=status,
            rule=f"one of {list(RUN_STATUSES)}",
        )
    return status


def check_key(key: Any, field: str) -> str:
    """A param/metric/tag key: 1-250 chars of letters, digits, ``_ . - / : space``."""
    if not full_match(_KEY_RE, key):
        raise ValidationError(
            f"{field} key {key!r} is not valid (rule: 1-250 chars of letters, digits, "
            "'_', '.', '-', '/', ':' or space)",
            field=field,
            value=key,
            rule="key",
        )
    return key


def check_metric_value(key: str, value: Any) -> float:
    """A metric value: a real number (bools count as 0/1; NaN and infinities are kept)."""
    if isinstance(value, (str, bytes)) or value is None:
        out = None
    else:
        try:
            out = float(value)
        except (TypeError, ValueError):
            out = None
    if out is None:
        raise ValidationError(
            f"metric {key!r} has value {value!r}, which is not a number (rule: int or float)",
            field=f"metrics.{key}",
            value=repr(value),
            rule="number",
        )
    return out
