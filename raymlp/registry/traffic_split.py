"""The traffic state of a model: what the serving gateways route besides the stable alias.

One small record per model, changed only by ``set_traffic`` (one ``traffic_changed`` event
with ``before`` and ``after``), so it is durable, audited, replayed after a restart and pushed
to every subscriber — a gateway applies a canary weight within seconds, without a redeploy::

    canary_version / canary_weight   a version and the percent of entities routed to it
    shadow_version                   a version that gets copies of live traffic (never answers)
    standby_version                  the previous stable version, kept warm for rollback
    steps                            the canary's step plan (percentages, increasing)

Fields not given keep their value (:data:`KEEP`); ``None`` clears a version. Clearing the
canary version also sets its weight to 0::

    plan = TrafficCommands(models).set_traffic(actor, "churn", canary_version=4,
                                               canary_weight=10, reason="canary 10%")
    plan.events[0].kind          # 'traffic_changed'

**Traffic is a promotion.** Real traffic to a version the model's approval policy has not
approved (:func:`~raymlp.registry.commands.unapproved_aliases`) is limited to a small canary:

- a canary weight above ``registry.max_unapproved_canary_weight`` (default 10 %) for such a
  version is refused (PermissionDeniedError, ``rule="max_unapproved_canary_weight"``), whoever
  asks — the SDK, the CLI, the monitor's auto-advance;
- a standby (the warm previous stable version a rollback returns to) must be approved
  (``rule="approved_standby"``);
- shadows are not limited (they never answer), nor is lowering a canary's weight (a rollback).

A model none of whose aliases needs approval has no such limit.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from raymlp.errors import ConflictError, PermissionDeniedError, ValidationError
from raymlp.registry.commands import ModelCommands, Plan, unapproved_aliases
from raymlp.registry.events import Event, EventKind
from raymlp.registry.rbac import Action, Actor
from raymlp.registry.state import ModelRecord

__all__ = [
    "KEEP",
    "TRAFFIC_FIELDS",
    "EMPTY_TRAFFIC",
    "EXTERNAL_EVENT_KINDS",
    "TrafficCommands",
    "traffic_view",
]

#: Event kinds other platform components may append to the registry's stream (audit only).
EXTERNAL_EVENT_KINDS = {
    "monitor_alert": EventKind.MONITOR_ALERT,
    "artifact_tampered": EventKind.ARTIFACT_TAMPERED,
}
#: External kinds a principal with read access may record: a model server (whose service
#: principal is often a viewer) reports a tampered artifact it refused to load. They change no
#: state; the payload names an existing version of a model of the caller's tenant.
_READER_EVENT_KINDS = frozenset({"artifact_tampered"})

#: Default of every ``set_traffic`` field: leave it as it is.
KEEP = "keep"

#: The fields of a traffic state, with their empty values.
EMPTY_TRAFFIC: dict[str, Any] = {
    "canary_version": None,
    "canary_weight": 0.0,
    "shadow_version": None,
    "standby_version": None,
    "steps": [],
}
TRAFFIC_FIELDS = tuple(EMPTY_TRAFFIC)


def traffic_view(model: ModelRecord) -> dict[str, Any]:
    """The traffic state of ``model`` (empty fields when it never had one)."""
    t = model.traffic
    out = {"name": model.name, **EMPTY_TRAFFIC, **{k: t[k] for k in TRAFFIC_FIELDS if k in t}}
    out["steps"] = list(out["steps"])
    out["updated_at"] = t.get("updated_at")
    out["updated_by"] = t.get("updated_by")
    out["reason"] = t.get("reason", "")
    return out


def _weight(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(
            f"canary_weight {value!r} is not a number (rule: a percentage 0..100)",
            field="canary_weight",
            value=repr(value),
            rule="0..100",
        )
    w = float(value)
    if not math.isfinite(w) or not 0.0 <= w <= 100.0:
        raise ValidationError(
            f"canary_weight {w} is out of range (rule: a percentage 0..100)",
            field="canary_weight",
            value=w,
            rule="0..100",
        )
    return w


def _steps(value: Any) -> list[float]:
    if not isinstance(value, list | tuple) or any(
        isinstance(s, bool) or not isinstance(s, numbers.Real) for s in value
    ):
        raise ValidationError(
            f"steps {value!r} is not a list of percentages (rule: e.g. [5, 25, 50, 100])",
            field="steps",
            rule="list of numbers",
        )
    steps = [float(s) for s in value]
    if any(not 0 < s <= 100 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValidationError(
            f"steps {steps!r} (rule: strictly increasing, each 0 < step <= 100)",
            field="steps",
            value=steps,
            rule="increasing percentages",
        )
    return steps


class TrafficCommands:
    """``set_traffic``: check the change against the model, then one ``traffic_changed`` event."""

    def __init__(self, models: ModelCommands) -> None:
        self.models = models

    def _version(self, model: ModelRecord, field: str, value: Any, live: bool) -> int | None:
        if value is None:
            return None
        try:
            rec = self.models.version(model, value)
        except ValidationError as e:
            raise ValidationError(
                f"{field}: {e.message}", **{**e.context, "field": field}
            ) from None
        if live and rec.stage == "archived":
            raise ConflictError(
                f"model {model.name!r} version {rec.version} is archived (rule: {field} must be "
                "a live version; restore it to staging first)",
                field=field,
                value=rec.version,
            )
        return rec.version

    def set_traffic(
        self,
        actor: Actor,
        name: Any,
        *,
        canary_version: Any = KEEP,
        canary_weight: Any = KEEP,
        shadow_version: Any = KEEP,
        standby_version: Any = KEEP,
        steps: Any = KEEP,
        reason: Any = "",
    ) -> Plan:
        """Change some fields of ``name``'s traffic state (developer role or above)."""
        model = self.models.model(actor, name, Action.WRITE)
        before = {k: traffic_view(model)[k] for k in TRAFFIC_FIELDS}
        after = dict(before)
        if canary_version != KEEP:
            after["canary_version"] = self._version(model, "canary_version", canary_version, True)
            if after["canary_version"] is None:
                after["canary_weight"] = 0.0
        if canary_weight != KEEP:
            after["canary_weight"] = _weight(canary_weight)
        if shadow_version != KEEP:
            after["shadow_version"] = self._version(model, "shadow_version", shadow_version, True)
        if standby_version != KEEP:
            after["standby_version"] = self._version(
                model, "standby_version", standby_version, False
            )
        if steps != KEEP:
            after["steps"] = _steps(steps) if steps is not None else []
        if after["canary_weight"] > 0 and after["canary_version"] is None:
            raise ValidationError(
                f"canary_weight {after['canary_weight']} without a canary version (rule: set "
                "canary_version too)",
                field="canary_version",
                rule="a weight needs a version",
            )
        if not isinstance(reason, str):
            raise ValidationError(f"reason {reason!r} is not text", field="reason")
        result = {"name": model.name, **after}
        if after == before:
            return Plan([], result)
        self._check_policy(actor, model, before, after)
        ev = Event(
            kind=EventKind.TRAFFIC_CHANGED,
            entity=f"model:{model.name}",
            principal=actor.name,
            tenant=model.tenant,
            payload={
                "name": model.name,
                "before": before,
                "after": after,
                "reason": reason,
                "result": result,
            },
        )
        return Plan([ev], result)


    def _check_policy(
        self, actor: Actor, model: ModelRecord, before: dict[str, Any], after: dict[str, Any]
    ) -> None:
        """Refuse real traffic to an unapproved version beyond the ceiling (module docstring).

        Only a change that adds traffic is judged: a new canary version, a higher weight, a new
        standby. Lowering a weight or clearing a version is always allowed (it is a rollback).
        """
        st, settings = self.models.state, self.models.settings
        ceiling = settings.max_unapproved_canary_weight
        version, weight = after["canary_version"], after["canary_weight"]
        grows = version != before["canary_version"] or weight > before["canary_weight"]
        if version is not None and weight > ceiling and grows:
            missing = unapproved_aliases(st, settings, model, version)
            if missing:
                raise PermissionDeniedError(
                    f"a canary of {weight:g}% for model {model.name!r} version {version} is a "
                    f"promotion: the version is not approved for alias(es) {missing} (rule: "
                    f"max_unapproved_canary_weight = {ceiling:g}% until a promotion request is "
                    "approved)",
                    principal=actor.name,
                    action="set_traffic",
                    rule="max_unapproved_canary_weight",
                    model=model.name,
                    version=version,
                    weight=weight,
                    max_unapproved_canary_weight=ceiling,
                    aliases=missing,
                )
        standby = after["standby_version"]
        if standby is not None and standby != before["standby_version"]:
            missing = unapproved_aliases(st, settings, model, standby)
            if missing:
                raise PermissionDeniedError(
                    f"model {model.name!r} version {standby} cannot be the warm standby: it is "
                    f"not approved for alias(es) {missing} (rule: approved_standby; a standby "
                    "is a previous stable version)",
                    principal=actor.name,
                    action="set_traffic",
                    rule="approved_standby",
                    model=model.name,
                    version=standby,
                    aliases=missing,
                )

    def record_event(self, actor: Actor, kind: Any, model: Any, payload: Any = None) -> Plan:
        """Append an external event (e.g. a monitor alert transition) about ``model`` to the
        stream, so subscribers and the audit log see it (developer role or above; an
        ``artifact_tampered`` report, naming an existing version, needs read access only). It
        changes no registry state."""
        ev_kind = EXTERNAL_EVENT_KINDS.get(kind) if isinstance(kind, str) else None
        if ev_kind is None:
            raise ValidationError(
                f"event kind {kind!r} is not accepted (rule: one of "
                f"{sorted(EXTERNAL_EVENT_KINDS)})",
                field="kind",
                value=repr(kind),
            )
        if payload is not None and not isinstance(payload, dict):
            raise ValidationError(f"payload {payload!r} is not a mapping", field="payload")
        action = Action.READ if kind in _READER_EVENT_KINDS else Action.WRITE
        rec = self.models.model(actor, model, action)
        if kind in _READER_EVENT_KINDS:
            # It must name a real version, so nobody fills the audit log with made-up ones.
            self.models.version(rec, (payload or {}).get("version"))
        ev = Event(
            kind=ev_kind,
            entity=f"model:{rec.name}",
            principal=actor.name,
            tenant=rec.tenant,
            payload={"name": rec.name, **(payload or {})},
        )
        return Plan([ev], {"name": rec.name, "kind": kind})
