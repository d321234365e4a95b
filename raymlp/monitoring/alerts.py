"""The alert rule engine: rules → deduplicated alerts with pending / firing / resolved states.

One alert exists per (rule, series labels) — its fingerprint — however often the rule is
evaluated, so a condition that stays true notifies once when it fires and once when it
resolves (plus optional reminders every ``repeat_interval``). A rule with ``for: 2m`` keeps
its alert *pending* until the condition has held that long. A series that stops reporting
(no traffic, fewer than ``min_count`` observations) leaves a firing alert as it is until a
whole window has passed without data, then resolves it ("no data"), so thin traffic does not
make alerts flap.

Besides rule alerts, :meth:`AlertEngine.fire` raises *event* alerts (e.g. a canary rollback)
that stay firing until resolved explicitly. Every transition is returned to the caller, which
persists it (the engine's state is the fold of its transitions: :meth:`AlertEngine.restore`)
and delivers it::

    engine = AlertEngine([rule])
    transitions = engine.evaluate(now, lambda rule: signals.series(rule.metric, ...))
    for t in transitions:
        print(t["transition"], t["rule"], t["labels"])       # firing error-rate {...}
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from raymlp.config import AlertRule
from raymlp.errors import NotFoundError, ValidationError
from raymlp.monitoring.signals import Sample

__all__ = ["Alert", "AlertEngine", "fingerprint", "SEVERITIES", "severity_at_least"]

SEVERITIES = ("info", "warning", "critical")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_KEEP_RESOLVED = 1000


def severity_at_least(severity: str, minimum: str) -> bool:
    return SEVERITIES.index(severity) >= SEVERITIES.index(minimum)


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """Stable id of the alert of ``rule`` on the series with ``labels``."""
    raw = json.dumps([rule, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


@dataclass
class Alert:
    """One alert (a dict on the wire: :meth:`to_dict`)."""

    id: str
    rule: str
    metric: str
    severity: str
    labels: dict[str, str]
    state: str  # pending | firing | resolved
    value: float | None
    threshold: float | None
    condition: str
    description: str
    started_at: float
    updated_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    last_notified_at: float | None = None
    last_data_at: float | None = None
    resolve_reason: str | None = None
    source: str = "rule"  # rule | event
    annotations: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alert:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def summary(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        val = "n/a" if self.value is None else f"{self.value:.4g}"
        if self.source == "event":
            return f"[{self.severity}] {self.rule} {{{labels}}}: {self.description}"
        return (
            f"[{self.severity}] {self.rule}: {self.metric}{{{labels}}} = {val} "
            f"{self.condition} {self.threshold:g}"
        )


class AlertEngine:
    """Rules, their alerts, and the transitions between states.

    Args:
        rules: the alert rules (replace them with :meth:`set_rules`).
        repeat_interval_s: re-notify a firing alert this often (0: never).
    """

    def __init__(self, rules: Iterable[AlertRule] = (), repeat_interval_s: float = 0.0) -> None:
        self.repeat_interval_s = repeat_interval_s
        self._rules: dict[str, AlertRule] = {}
        self._active: dict[str, Alert] = {}  # pending + firing
        self._resolved: OrderedDict[str, Alert] = OrderedDict()
        for r in rules:
            self._rules[r.name] = r

    @property
    def rules(self) -> list[AlertRule]:
        return list(self._rules.values())

    def set_rules(self, rules: Iterable[AlertRule], now: float) -> list[dict[str, Any]]:
        """Replace the rules; alerts of rules that are gone (or changed) resolve."""
        new = {r.name: r for r in rules}
        out = []
        for a in list(self._active.values()):
            if a.source != "rule":
                continue
            old = self._rules.get(a.rule)
            if a.rule not in new or (old is not None and new[a.rule] != old):
                t = self._resolve(a, now, "rule removed or changed")
                if t:
                    out.append(t)
        self._rules = new
        return out

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(
        self, now: float, series: Callable[[AlertRule], list[Sample]]
    ) -> list[dict[str, Any]]:
        """Evaluate every rule at ``now``; returns the transitions (firing, resolved, repeat)."""
        out: list[dict[str, Any]] = []
        for rule in self._rules.values():
            seen: set[str] = set()
            for s in series(rule):
                if any(s.labels.get(k) != v for k, v in rule.match.items()):
                    continue
                if s.count < rule.min_count:
                    continue
                fp = fingerprint(rule.name, s.labels)
                seen.add(fp)
                out.extend(self._step(rule, fp, s, now))
            window = rule.window.total_seconds()
            for a in list(self._active.values()):
                if a.rule != rule.name or a.source != "rule" or a.id in seen:
                    continue
                if a.state == "pending":
                    del self._active[a.id]
                elif (
                    now - (a.last_data_at if a.last_data_at is not None else a.updated_at) >= window
                ):
                    t = self._resolve(a, now, "no data")
                    if t:
                        out.append(t)
        return out

    def _step(self, rule: AlertRule, fp: str, s: Sample, now: float) -> list[dict[str, Any]]:
        bad = _OPS[rule.condition](s.value, rule.threshold)
        a = self._active.get(fp)
        if not bad:
            if a is None:
                return []
            if a.state == "pending":
                del self._active[fp]
                return []
            a.value = s.value
            t = self._resolve(a, now, "condition cleared")
            return [t] if t else []
        if a is None:
            a = Alert(
                id=fp,
                rule=rule.name,
                metric=rule.metric,
                severity=rule.severity,
                labels={**dict(s.labels), **rule.labels},
                state="pending",
                value=s.value,
                threshold=rule.threshold,
                condition=rule.condition,
                description=rule.description,
                started_at=now,
                updated_at=now,
                last_data_at=now,
                annotations=dict(s.extra),
            )
            self._active[fp] = a
        a.value = s.value
        a.updated_at = now
        a.last_data_at = now
        if a.state == "pending" and now - a.started_at >= rule.for_.total_seconds():
            a.state = "firing"
            a.fired_at = now
            a.last_notified_at = now
            self._resolved.pop(fp, None)
            return [self._transition(a, "firing", now)]
        last = a.last_notified_at if a.last_notified_at is not None else a.fired_at
        if (
            a.state == "firing"
            and self.repeat_interval_s > 0
            and last is not None
            and now - last >= self.repeat_interval_s
        ):
            a.last_notified_at = now
            return [self._transition(a, "repeat", now)]
        return []

    def _transition(self, a: Alert, kind: str, now: float) -> dict[str, Any]:
        return {**a.to_dict(), "transition": kind, "ts": now, "summary": a.summary}

    def _resolve(self, a: Alert, now: float, reason: str) -> dict[str, Any] | None:
        self._active.pop(a.id, None)
        if a.state != "firing":
            return None
        a.state = "resolved"
        a.resolved_at = now
        a.updated_at = now
        a.resolve_reason = reason
        self._resolved[a.id] = a
        self._resolved.move_to_end(a.id)
        while len(self._resolved) > _KEEP_RESOLVED:
            self._resolved.popitem(last=False)
        return self._transition(a, "resolved", now)

    # -- event alerts ----------------------------------------------------------------------------

    def fire(
        self,
        name: str,
        severity: str,
        labels: Mapping[str, str],
        description: str,
        now: float,
        value: float | None = None,
        annotations: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Raise an event alert (deduplicated: None if the same one is already firing)."""
        if severity not in SEVERITIES:
            raise ValidationError(
                f"severity {severity!r} is not one of {SEVERITIES}",
                field="severity",
                value=severity,
                rule="|".join(SEVERITIES),
            )
        fp = fingerprint(name, labels)
        if fp in self._active:
            return None
        a = Alert(
            id=fp,
            rule=name,
            metric="event",
            severity=severity,
            labels=dict(labels),
            state="firing",
            value=value,
            threshold=None,
            condition="",
            description=description,
            started_at=now,
            updated_at=now,
            fired_at=now,
            last_notified_at=now,
            source="event",
            annotations=dict(annotations or {}),
        )
        self._active[fp] = a
        self._resolved.pop(fp, None)
        return self._transition(a, "firing", now)

    def resolve(
        self, alert_id: str, now: float, reason: str = "resolved by user"
    ) -> dict[str, Any]:
        """Resolve a firing alert by id (event alerts end this way)."""
        a = self._active.get(alert_id)
        if a is None or a.state != "firing":
            raise NotFoundError(f"no firing alert {alert_id!r}", kind="alert", name=alert_id)
        return self._resolve(a, now, reason) or {}

    def resolve_matching(
        self, name: str, labels: Mapping[str, str], now: float, reason: str
    ) -> dict[str, Any] | None:
        a = self._active.get(fingerprint(name, labels))
        return self._resolve(a, now, reason) if a is not None else None

    # -- state ------------------------------------------------------------------------------------

    def restore(self, transitions: Iterable[Mapping[str, Any]]) -> None:
        """Rebuild the alerts from persisted transitions (oldest first)."""
        self._active.clear()
        self._resolved.clear()
        for t in transitions:
            a = Alert.from_dict(t)
            if t.get("transition") in ("firing", "repeat"):
                a.state = "firing"
                self._active[a.id] = a
                self._resolved.pop(a.id, None)
            elif t.get("transition") == "resolved":
                self._active.pop(a.id, None)
                a.state = "resolved"
                self._resolved[a.id] = a

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        """Alerts (``state``: pending, firing, resolved or None for all), newest first."""
        if state not in (None, "pending", "firing", "resolved"):
            raise ValidationError(
                f"state {state!r} is not pending|firing|resolved",
                field="state",
                value=state,
                rule="pending|firing|resolved",
            )
        rows = [a for a in self._active.values() if state in (None, a.state)]
        if state in (None, "resolved"):
            rows += list(self._resolved.values())
        rows.sort(key=lambda a: -(a.updated_at or 0))
        return [{**a.to_dict(), "summary": a.summary} for a in rows]

    def firing_counts(self) -> dict[tuple[str, str], int]:
        """Firing alerts per (rule, severity) (for the ``raymlp_alerts_firing`` gauge)."""
        out: dict[tuple[str, str], int] = {}
        for a in self._active.values():
            if a.state == "firing":
                out[(a.rule, a.severity)] = out.get((a.rule, a.severity), 0) + 1
        for r in self._rules.values():  # report 0 for quiet rules: the series exists
            out.setdefault((r.name, r.severity), 0)
        return out
