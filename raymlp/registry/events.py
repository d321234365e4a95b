"""Registry events: every mutation is one or more events (who, what, when, before/after).

The event log is both the audit trail and the recovery log: the registry state is exactly the
fold of :meth:`RegistryState.apply` over the events in ``seq`` order. An :class:`Event` becomes
one row of the Delta event table (``payload`` is JSON)::

    >>> ev = Event(kind="alias_moved", entity="model:churn", principal="alice",
    ...            tenant="default", payload={"alias": "production", "before": 1, "after": 2})
    >>> ev.to_dict()["payload"]["after"]
    2
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventKind", "PROMOTION_KINDS", "MODEL_KINDS", "RUN_KINDS"]


class EventKind:
    """The kinds of event (the ``kind`` column)."""

    EXPERIMENT_CREATED = "experiment_created"
    RUN_STARTED = "run_started"
    PARAMS_LOGGED = "params_logged"
    METRICS_LOGGED = "metrics_logged"
    TAGS_SET = "tags_set"
    ARTIFACT_LOGGED = "artifact_logged"
    RUN_ENDED = "run_ended"
    MODEL_CREATED = "model_created"
    VERSION_REGISTERED = "version_registered"
    STAGE_CHANGED = "stage_changed"
    ALIAS_MOVED = "alias_moved"
    ALIAS_DELETED = "alias_deleted"
    PROMOTION_REQUESTED = "promotion_requested"
    PROMOTION_APPROVED = "promotion_approved"
    PROMOTION_REJECTED = "promotion_rejected"
    TRAFFIC_CHANGED = "traffic_changed"
    MONITOR_ALERT = "monitor_alert"
    #: a model server found a version's files differ from their registered digests
    ARTIFACT_TAMPERED = "artifact_tampered"


#: Events a serving gateway or CI hook reacts to.
PROMOTION_KINDS = frozenset(
    {
        EventKind.ALIAS_MOVED,
        EventKind.ALIAS_DELETED,
        EventKind.STAGE_CHANGED,
        EventKind.PROMOTION_REQUESTED,
        EventKind.PROMOTION_APPROVED,
        EventKind.PROMOTION_REJECTED,
        EventKind.TRAFFIC_CHANGED,
        EventKind.MONITOR_ALERT,
        EventKind.ARTIFACT_TAMPERED,
    }
)
MODEL_KINDS = PROMOTION_KINDS | {EventKind.MODEL_CREATED, EventKind.VERSION_REGISTERED}
RUN_KINDS = frozenset(
    {
        EventKind.EXPERIMENT_CREATED,
        EventKind.RUN_STARTED,
        EventKind.PARAMS_LOGGED,
        EventKind.METRICS_LOGGED,
        EventKind.TAGS_SET,
        EventKind.ARTIFACT_LOGGED,
        EventKind.RUN_ENDED,
    }
)


@dataclass
class Event:
    """One registry event. ``seq`` is assigned when it is committed (0 before).

    Attributes:
        kind: an :class:`EventKind` value.
        entity: what changed: ``model:<name>``, ``model:<name>/<version>``, ``run:<id>``,
            ``experiment:<name>``, ``request:<id>``.
        principal / tenant: who acted, and the tenant owning the entity.
        payload: the change; mutations of existing things carry ``before`` and ``after``.
        op_id: the client's idempotency key of the call that produced it.
        ts: commit time, epoch seconds.
    """

    kind: str
    entity: str
    principal: str
    tenant: str
    payload: dict[str, Any] = field(default_factory=dict)
    op_id: str | None = None
    seq: int = 0
    ts: float = field(default_factory=time.time)

    @property
    def model(self) -> str | None:
        """The model name of a ``model:...`` entity."""
        if self.entity.startswith("model:"):
            return self.entity[len("model:") :].split("/", 1)[0]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "principal": self.principal,
            "tenant": self.tenant,
            "kind": self.kind,
            "entity": self.entity,
            "payload": self.payload,
            "op_id": self.op_id,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        payload = d.get("payload") or {}
        if isinstance(payload, str):
            payload = json.loads(payload)
        return cls(
            kind=d["kind"],
            entity=d["entity"],
            principal=d["principal"],
            tenant=d["tenant"],
            payload=payload,
            op_id=d.get("op_id"),
            seq=int(d.get("seq") or 0),
            ts=float(d.get("ts") or 0.0),
        )

    def payload_json(self) -> str:
        return json.dumps(self.payload, sort_keys=True, separators=(",", ":"), default=str)
