"""The registry state and its event-sourced transition function.

:class:`RegistryState` is a pure fold over events: ``state.apply(event)`` is the only way it
changes, so replaying the event log in ``seq`` order rebuilds exactly the state a live registry
had. Commands (``commands.py``, ``tracking.py``) check every rule *before* an event is written;
``apply`` trusts committed events and never raises on them::

    >>> st = RegistryState()
    >>> st.apply(Event(kind="model_created", entity="model:churn", principal="a",
    ...                tenant="default", payload={"name": "churn"}, seq=1))
    >>> st.models["churn"].next_version
    1
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from raymlp.registry.events import Event, EventKind
from raymlp.registry.lineage import LineageIndex

__all__ = [
    "VersionRecord",
    "ModelRecord",
    "PromotionRequest",
    "ExperimentRecord",
    "RunRecord",
    "RegistryState",
]

#: Idempotency keys remembered (client retries after an actor restart reuse their key).
_MAX_OP_RESULTS = 50_000


@dataclass
class VersionRecord:
    name: str
    version: int
    tenant: str
    artifact_uri: str
    signature: dict[str, Any] | None
    metrics: dict[str, float]
    lineage: dict[str, Any]
    card: str | None
    description: str
    created_at: float
    created_by: str
    run_id: str | None = None
    stage: str = "none"
    #: ``{relative path: "sha256:<hex>"}`` of every artifact file at registration; None for
    #: versions registered before digests were recorded (they load with a warning).
    digests: dict[str, str] | None = None


@dataclass
class ModelRecord:
    name: str
    tenant: str
    created_at: float
    created_by: str
    description: str = ""
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    #: Per alias, the earlier holders (a stack): rollback pops it.
    alias_history: dict[str, list[int]] = field(default_factory=dict)
    next_version: int = 1
    #: The serving traffic state (canary, shadow, standby, steps): see ``traffic_split.py``.
    traffic: dict[str, Any] = field(default_factory=dict)

    def aliases_of(self, version: int) -> list[str]:
        return sorted(a for a, v in self.aliases.items() if v == version)


@dataclass
class PromotionRequest:
    id: str
    model: str
    version: int
    alias: str
    from_version: int | None
    requested_by: str
    reason: str
    created_at: float
    tenant: str
    status: str = "pending"  # pending | approved | rejected
    decided_by: str | None = None
    decided_at: float | None = None
    comment: str = ""


@dataclass
class ExperimentRecord:
    name: str
    tenant: str
    created_at: float
    created_by: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)


@dataclass
class RunRecord:
    run_id: str
    experiment: str
    tenant: str
    name: str
    created_by: str
    start_time: float
    status: str = "RUNNING"
    end_time: float | None = None
    params: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    #: latest value per metric
    metrics: dict[str, float] = field(default_factory=dict)
    #: per metric: [(step, value, ts), ...] in logging order
    history: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    artifacts: list[dict[str, str]] = field(default_factory=list)
    parent_run_id: str | None = None
    git_commit: str | None = None
    children: list[str] = field(default_factory=list)


class RegistryState:
    """Everything the registry knows, rebuilt from events."""

    def __init__(self) -> None:
        self.models: dict[str, ModelRecord] = {}
        self.requests: dict[str, PromotionRequest] = {}
        self.experiments: dict[str, ExperimentRecord] = {}
        self.runs: dict[str, RunRecord] = {}
        self.lineage = LineageIndex()
        self.last_seq = 0
        self.request_counter = 0
        self.op_results: OrderedDict[str, Any] = OrderedDict()

    # -- the transition function ----------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one committed event into the state (events must come in ``seq`` order)."""
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, event)
        if event.op_id:
            # A call's events share its op_id; the one carrying "result" gives the answer a
            # retried call gets back.
            if "result" in event.payload or event.op_id not in self.op_results:
                self.op_results[event.op_id] = event.payload.get("result")
            self.op_results.move_to_end(event.op_id)
            while len(self.op_results) > _MAX_OP_RESULTS:
                self.op_results.popitem(last=False)
        if event.seq:
            self.last_seq = max(self.last_seq, event.seq)

    def apply_all(self, events: list[Event]) -> None:
        for ev in events:
            self.apply(ev)


# -- handlers: one per event kind ----------------------------------------------------------


def _experiment_created(st: RegistryState, ev: Event) -> None:
    p = ev.payload
    st.experiments[p["name"]] = ExperimentRecord(
        name=p["name"],
        tenant=ev.tenant,
        created_at=ev.ts,
        created_by=ev.principal,
        description=p.get("description") or "",
        tags=dict(p.get("tags") or {}),
    )


def _run_started(st: RegistryState, ev: Event) -> None:
    p = ev.payload
    run = RunRecord(
        run_id=p["run_id"],
        experiment=p["experiment"],
        tenant=ev.tenant,
        name=p.get("name") or p["run_id"],
        created_by=ev.principal,
        start_time=ev.ts,
        params=dict(p.get("params") or {}),
        config=p.get("config"),
        tags=dict(p.get("tags") or {}),
        parent_run_id=p.get("parent_run_id"),
        git_commit=p.get("git_commit"),
    )
    st.runs[run.run_id] = run
    exp = st.experiments.get(run.experiment)
    if exp is not None:
        exp.run_ids.append(run.run_id)
    parent = st.runs.get(run.parent_run_id or "")
    if parent is not None:
        parent.children.append(run.run_id)


def _params_logged(st: RegistryState, ev: Event) -> None:
    run = st.runs.get(ev.payload["run_id"])
    if run is not None:
        run.params.update(ev.payload.get("params") or {})


def _metrics_logged(st: RegistryState, ev: Event) -> None:
    run = st.runs.get(ev.payload["run_id"])
    if run is None:
        return
    step = ev.payload.get("step")
    for key, value in (ev.payload.get("metrics") or {}).items():
        hist = run.history.setdefault(key, [])
        s = int(step) if step is not None else len(hist)
        hist.append((s, float(value), ev.ts))
        run.metrics[key] = float(value)


def _tags_set(st: RegistryState, ev: Event) -> None:
    run = st.runs.get(ev.payload.get("run_id") or "")
    if run is not None:
        run.tags.update(ev.payload.get("tags") or {})


def _artifact_logged(st: RegistryState, ev: Event) -> None:
    run = st.runs.get(ev.payload["run_id"])
    if run is not None:
        run.artifacts.append({"path": ev.payload["path"], "uri": ev.payload["uri"]})


def _run_ended(st: RegistryState, ev: Event) -> None:
    run = st.runs.get(ev.payload["run_id"])
    if run is not None:
        run.status = ev.payload["after"]
        run.end_time = ev.ts


def _model_created(st: RegistryState, ev: Event) -> None:
    p = ev.payload
    st.models[p["name"]] = ModelRecord(
        name=p["name"],
        tenant=ev.tenant,
        created_at=ev.ts,
        created_by=ev.principal,
        description=p.get("description") or "",
    )


def _version_registered(st: RegistryState, ev: Event) -> None:
    p = ev.payload
    model = st.models.get(p["name"])
    if model is None:
        return
    rec = VersionRecord(
        name=p["name"],
        version=int(p["version"]),
        tenant=ev.tenant,
        artifact_uri=p["artifact_uri"],
        signature=p.get("signature"),
        metrics=dict(p.get("metrics") or {}),
        lineage=dict(p.get("lineage") or {}),
        card=p.get("card"),
        description=p.get("description") or "",
        created_at=ev.ts,
        created_by=ev.principal,
        run_id=p.get("run_id"),
        digests=dict(p["digests"]) if p.get("digests") is not None else None,
    )
    model.versions[rec.version] = rec
    model.next_version = max(model.next_version, rec.version + 1)
    st.lineage.add(rec.name, rec.version, rec.lineage)


def _stage_changed(st: RegistryState, ev: Event) -> None:
    p = ev.payload
    model = st.models.get(p["name"])
    if model is not None and int(p["version"]) in model.versions:
        model.versions[int(p["version"])].stage = p["after"]


def _alias_moved(st: RegistryState, ev: Event) -> None:
    p = ev.payload
    model = st.models.get(p["name"])
    if model is None:
        return
    alias, before = p["alias"], p.get("before")
    hist = model.alias_history.setdefault(alias, [])
    if p.get("reason") == "rollback":
        if hist:
            hist.pop()
    elif before is not None:
        hist.append(int(before))
    model.aliases[alias] = int(p["after"])


def _alias_deleted(st: RegistryState, ev: Event) -> None:
    p = ev.payload
    model = st.models.get(p["name"])
    if model is None:
        return
    before = model.aliases.pop(p["alias"], None)
    if before is not None:
        model.alias_history.setdefault(p["alias"], []).append(before)


def _promotion_requested(st: RegistryState, ev: Event) -> None:
    p = ev.payload
    req = PromotionRequest(
        id=p["request_id"],
        model=p["name"],
        version=int(p["version"]),
        alias=p["alias"],
        from_version=p.get("from_version"),
        requested_by=ev.principal,
        reason=p.get("reason") or "",
        created_at=ev.ts,
        tenant=ev.tenant,
    )
    st.requests[req.id] = req
    num = req.id.rsplit("-", 1)[-1]
    if num.isdigit():
        st.request_counter = max(st.request_counter, int(num))


def _promotion_decided(st: RegistryState, ev: Event) -> None:
    req = st.requests.get(ev.payload["request_id"])
    if req is None:
        return
    req.status = "approved" if ev.kind == EventKind.PROMOTION_APPROVED else "rejected"
    req.decided_by = ev.principal
    req.decided_at = ev.ts
    req.comment = ev.payload.get("comment") or ev.payload.get("reason") or ""


def _traffic_changed(st: RegistryState, ev: Event) -> None:
    model = st.models.get(ev.payload["name"])
    if model is not None:
        model.traffic = {
            **ev.payload["after"],
            "updated_at": ev.ts,
            "updated_by": ev.principal,
            "reason": ev.payload.get("reason") or "",
        }


_HANDLERS = {
    EventKind.EXPERIMENT_CREATED: _experiment_created,
    EventKind.RUN_STARTED: _run_started,
    EventKind.PARAMS_LOGGED: _params_logged,
    EventKind.METRICS_LOGGED: _metrics_logged,
    EventKind.TAGS_SET: _tags_set,
    EventKind.ARTIFACT_LOGGED: _artifact_logged,
    EventKind.RUN_ENDED: _run_ended,
    EventKind.MODEL_CREATED: _model_created,
    EventKind.VERSION_REGISTERED: _version_registered,
    EventKind.STAGE_CHANGED: _stage_changed,
    EventKind.ALIAS_MOVED: _alias_moved,
    EventKind.ALIAS_DELETED: _alias_deleted,
    EventKind.PROMOTION_REQUESTED: _promotion_requested,
    EventKind.PROMOTION_APPROVED: _promotion_decided,
    EventKind.PROMOTION_REJECTED: _promotion_decided,
    EventKind.TRAFFIC_CHANGED: _traffic_changed,
    EventKind.MONITOR_ALERT: lambda st, ev: None,  # audit and subscribers only
    EventKind.ARTIFACT_TAMPERED: lambda st, ev: None,  # audit, alerts and webhooks only
}
