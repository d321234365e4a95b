"""Run search: an MLflow-style filter string and ``order_by`` over runs.

Filter: clauses joined by ``and``; each is ``<key> <op> <value>`` where key is
``metrics.<name>``, ``params.<name>``, ``tags.<name>`` or an attribute (``status``, ``name``,
``run_id``, ``experiment``, ``start_time``, ``end_time``, ``parent_run_id``, ``created_by``,
also spelled ``attributes.status``), op is one of ``= == != > >= < <=`` and value a number or a
quoted string::

    >>> f = parse_filter("metrics.val_auc > 0.8 and status = 'FINISHED'")
    >>> o = parse_order_by("metrics.val_auc DESC")

Runs lacking the key never match a filter clause and sort last whatever the direction.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raymlp.errors import ValidationError
from raymlp.registry.state import RunRecord

__all__ = ["Clause", "OrderKey", "parse_filter", "parse_order_by", "search", "run_value"]

_ATTRIBUTES = (
    "status",
    "name",
    "run_id",
    "experiment",
    "start_time",
    "end_time",
    "parent_run_id",
    "created_by",
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_CLAUSE_RE = re.compile(
    r"^\s*(?P<key>[A-Za-z_][\w.\-/:]*|`[^`]+`(?:\.`[^`]+`)?|[A-Za-z_]+\.`[^`]+`)\s*"
    r"(?P<op>==|!=|>=|<=|=|>|<)\s*(?P<value>.+?)\s*$"
)
_AND_RE = re.compile(r"\s+and\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Clause:
    entity: str  # metrics | params | tags | attributes
    key: str
    op: str
    value: Any


@dataclass(frozen=True)
class OrderKey:
    entity: str
    key: str
    descending: bool


def _split_key(raw: str, where: str) -> tuple[str, str]:
    raw = raw.replace("`", "")
    head, dot, rest = raw.partition(".")
    if dot and head in ("metrics", "params", "tags", "attributes"):
        entity, key = head, rest
    elif dot and head in ("metric", "param", "tag", "attribute"):
        entity, key = head + "s", rest
    else:
        entity, key = "attributes", raw
    if not key:
        raise ValidationError(f"{where}: empty key in {raw!r}", field=where, value=raw)
    if entity == "attributes" and key not in _ATTRIBUTES:
        raise ValidationError(
            f"{where}: unknown key {raw!r} (rule: metrics.<name>, params.<name>, tags.<name> or "
            f"one of {', '.join(_ATTRIBUTES)})",
            field=where,
            value=raw,
            rule="search key",
        )
    return entity, key


def _literal(text: str, where: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ValidationError(
        f"{where}: value {text!r} is neither a number nor a quoted string",
        field=where,
        value=text,
        rule="number or 'string'",
    )


def parse_filter(text: str | None) -> list[Clause]:
    """Parse a filter string into clauses (all must hold)."""
    if text is None or not str(text).strip():
        return []
    clauses = []
    for part in _AND_RE.split(str(text).strip()):
        m = _CLAUSE_RE.match(part)
        if not m:
            raise ValidationError(
                f"filter clause {part!r} is not understood (rule: <key> <op> <value>, ops "
                "= != > >= < <=, clauses joined by 'and')",
                field="filter",
                value=part,
                rule="filter syntax",
            )
        entity, key = _split_key(m.group("key"), "filter")
        clauses.append(Clause(entity, key, m.group("op"), _literal(m.group("value"), "filter")))
    return clauses


def parse_order_by(order_by: str | list[str] | None) -> list[OrderKey]:
    """``"metrics.val_auc DESC"`` (or a list of such, or comma-separated) into sort keys."""
    if order_by is None:
        return []
    items = order_by if isinstance(order_by, list) else str(order_by).split(",")
    keys = []
    for item in items:
        words = str(item).strip().split()
        if not words:
            continue
        descending = False
        if len(words) == 2 and words[1].upper() in ("ASC", "DESC"):
            descending = words[1].upper() == "DESC"
        elif len(words) != 1:
            raise ValidationError(
                f"order_by {item!r} is not understood (rule: '<key> [ASC|DESC]')",
                field="order_by",
                value=item,
                rule="order_by syntax",
            )
        entity, key = _split_key(words[0], "order_by")
        keys.append(OrderKey(entity, key, descending))
    return keys


def run_value(run: RunRecord, entity: str, key: str) -> Any:
    if entity == "metrics":
        return run.metrics.get(key)
    if entity == "params":
        return run.params.get(key)
    if entity == "tags":
        return run.tags.get(key)
    if key == "name":
        return run.name
    return getattr(run, key, None)


def _comparable(a: Any, b: Any) -> tuple[Any, Any] | None:
    num = (int, float)
    if isinstance(a, num) and not isinstance(a, bool) and isinstance(b, num):
        return a, b
    if isinstance(a, str) and isinstance(b, num) and not isinstance(b, bool):
        try:
            return float(a), b
        except ValueError:
            return None
    if isinstance(b, str):
        return str(a), b
    if isinstance(a, bool) and isinstance(b, bool):
        return a, b
    return None


def matches(run: RunRecord, clauses: list[Clause]) -> bool:
    for c in clauses:
        value = run_value(run, c.entity, c.key)
        if value is None:
            return False
        pair = _comparable(value, c.value)
        if pair is None:
            if c.op != "!=":
                return False
            continue
        try:
            if not _OPS[c.op](*pair):
                return False
        except TypeError:
            return False
    return True


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _sort_token(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (1, float(value))
    if isinstance(value, (int, float)):
        return (1, float(value))
    return (2, str(value))


def search(
    runs: list[RunRecord],
    filter: str | None = None,
    order_by: str | list[str] | None = None,
    max_results: int = 1000,
) -> list[RunRecord]:
    """Runs matching ``filter``, sorted by ``order_by`` (then newest first), at most
    ``max_results``."""
    if not isinstance(max_results, int) or isinstance(max_results, bool) or max_results < 1:
        raise ValidationError(
            f"max_results {max_results!r} must be an integer >= 1",
            field="max_results",
            value=max_results,
        )
    clauses = parse_filter(filter)
    keys = parse_order_by(order_by)
    out = [r for r in runs if matches(r, clauses)]
    out.sort(key=lambda r: -r.start_time)  # stable tie-break: newest first
    for k in reversed(keys):
        present = [r for r in out if _present(run_value(r, k.entity, k.key))]
        missing = [r for r in out if not _present(run_value(r, k.entity, k.key))]
        present.sort(key=lambda r: _sort_token(run_value(r, k.entity, k.key)), reverse=k.descending)
        out = present + missing
    return out[:max_results]
