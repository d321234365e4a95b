"""Experiment-tracking commands: experiments and runs (params, metrics per step, tags,
artifacts, status, the config that produced the run, its git commit, its parent run).

Like :mod:`raymlp.registry.commands`, each command checks its rules and returns a
:class:`~raymlp.registry.commands.Plan`; nothing changes until the events are committed::

    plan = TrackingCommands(state).start_run(actor, "churn-tuning", params={"lr": 0.01})
    run_id = plan.result
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from raymlp.errors import ConflictError, NotFoundError, ValidationError
from raymlp.registry import names
from raymlp.registry.commands import Plan
from raymlp.registry.events import Event, EventKind
from raymlp.registry.rbac import Action, Actor, authorize, check_tenant
from raymlp.registry.state import ExperimentRecord, RegistryState, RunRecord

__all__ = ["TrackingCommands", "clean_params"]


def _scalar(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    try:  # numpy scalars and the like
        item = value.item()
        if isinstance(item, (bool, int, float, str)):
            return item
    except AttributeError:
        pass
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def clean_params(params: dict[str, Any] | None, field: str = "params") -> dict[str, Any]:
    """Params as JSON scalars (nested values become their JSON text), keys checked."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValidationError(
            f"{field} must be a mapping, got {type(params).__name__}", field=field
        )
    return {names.check_key(str(k), field): _scalar(str(k), v) for k, v in params.items()}


def _clean_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise ValidationError(f"tags must be a mapping, got {type(tags).__name__}", field="tags")
    return {names.check_key(str(k), "tags"): str(v) for k, v in tags.items()}


def _clean_config(config: Any) -> Any:
    if config is None:
        return None
    try:
        return json.loads(json.dumps(config, default=str))
    except (TypeError, ValueError) as e:
        raise ValidationError(f"config is not JSON-serialisable: {e}", field="config") from None


class TrackingCommands:
    """Experiments and runs."""

    def __init__(self, state: RegistryState) -> None:
        self.state = state

    def experiment(self, actor: Actor, name: Any) -> ExperimentRecord:
        names.check_experiment_name(name)
        exp = self.state.experiments.get(name)
        if exp is None:
            raise NotFoundError(f"experiment {name!r} does not exist", kind="experiment", name=name)
        check_tenant(actor, exp.tenant, f"experiment {name!r}")
        return exp

    def run(self, actor: Actor, run_id: Any, *, running: bool = False) -> RunRecord:
        run = self.state.runs.get(str(run_id))
        if run is None:
            raise NotFoundError(f"run {run_id!r} does not exist", kind="run", name=str(run_id))
        check_tenant(actor, run.tenant, f"run {run_id!r}")
        if running and run.status != "RUNNING":
            raise ConflictError(
                f"run {run.run_id!r} is {run.status} (rule: only a RUNNING run takes new data)",
                run_id=run.run_id,
                status=run.status,
            )
        return run

    def _ev(self, actor: Actor, kind: str, entity: str, tenant: str, **payload: Any) -> Event:
        return Event(kind=kind, entity=entity, principal=actor.name, tenant=tenant, payload=payload)

    def create_experiment(
        self,
        actor: Actor,
        name: Any,
        *,
        description: str = "",
        tags: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> Plan:
        authorize(actor, Action.WRITE, f"experiment {name!r}")
        names.check_experiment_name(name)
        existing = self.state.experiments.get(name)
        if existing is not None:
            check_tenant(actor, existing.tenant, f"experiment {name!r}")
            if exist_ok:
                return Plan([], name)
            raise ConflictError(f"experiment {name!r} already exists", kind="experiment", name=name)
        ev = self._ev(
            actor,
            EventKind.EXPERIMENT_CREATED,
            f"experiment:{name}",
            actor.tenant,
            name=name,
            description=str(description or ""),
            tags=_clean_tags(tags),
            result=name,
        )
        return Plan([ev], name)

    def start_run(
        self,
        actor: Actor,
        experiment: Any,
        *,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        config: Any = None,
        tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        git_commit: str | None = None,
        run_id: str | None = None,
    ) -> Plan:
        """Start a run (creating the experiment if needed); the answer is the run id."""
        authorize(actor, Action.WRITE, f"experiment {experiment!r}")
        events: list[Event] = []
        names.check_experiment_name(experiment)
        if experiment in self.state.experiments:
            self.experiment(actor, experiment)
        else:
            events.append(
                self._ev(
                    actor,
                    EventKind.EXPERIMENT_CREATED,
                    f"experiment:{experiment}",
                    actor.tenant,
                    name=experiment,
                    description="",
                    tags={},
                )
            )
        if parent_run_id is not None:
            self.run(actor, parent_run_id)
        run_id = run_id or uuid.uuid4().hex[:16]
        if run_id in self.state.runs:
            raise ConflictError(f"run {run_id!r} already exists", kind="run", name=run_id)
        if git_commit is not None and not isinstance(git_commit, str):
            raise ValidationError("git_commit must be a string", field="git_commit")
        events.append(
            self._ev(
                actor,
                EventKind.RUN_STARTED,
                f"run:{run_id}",
                actor.tenant,
                run_id=run_id,
                experiment=experiment,
                name=str(name) if name else run_id,
                params=clean_params(params),
                config=_clean_config(config),
                tags=_clean_tags(tags),
                parent_run_id=parent_run_id,
                git_commit=git_commit,
                result=run_id,
            )
        )
        return Plan(events, run_id)

    def log_params(self, actor: Actor, run_id: Any, params: dict[str, Any]) -> Plan:
        authorize(actor, Action.WRITE, f"run {run_id!r}")
        run = self.run(actor, run_id, running=True)
        clean = clean_params(params)
        for k, v in clean.items():
            if k in run.params and run.params[k] != v:
                raise ConflictError(
                    f"param {k!r} of run {run.run_id!r} is already {run.params[k]!r}; got {v!r} "
                    "(rule: params are immutable)",
                    field=f"params.{k}",
                    value=v,
                    current=run.params[k],
                )
        new = {k: v for k, v in clean.items() if k not in run.params}
        if not new:
            return Plan([], None)
        return Plan(
            [
                self._ev(
                    actor,
                    EventKind.PARAMS_LOGGED,
                    f"run:{run.run_id}",
                    run.tenant,
                    run_id=run.run_id,
                    params=new,
                )
            ]
        )

    def log_metrics(
        self, actor: Actor, run_id: Any, metrics: dict[str, Any], step: int | None = None
    ) -> Plan:
        authorize(actor, Action.WRITE, f"run {run_id!r}")
        run = self.run(actor, run_id, running=True)
        if not isinstance(metrics, dict) or not metrics:
            raise ValidationError(
                "metrics must be a non-empty mapping of name -> number", field="metrics"
            )
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise ValidationError(
                f"step {step!r} must be an integer >= 0", field="step", value=step
            )
        clean = {
            names.check_key(str(k), "metrics"): names.check_metric_value(str(k), v)
            for k, v in metrics.items()
        }
        return Plan(
            [
                self._ev(
                    actor,
                    EventKind.METRICS_LOGGED,
                    f"run:{run.run_id}",
                    run.tenant,
                    run_id=run.run_id,
                    metrics=clean,
                    step=step,
                )
            ]
        )

    def set_tags(self, actor: Actor, run_id: Any, tags: dict[str, Any]) -> Plan:
        authorize(actor, Action.WRITE, f"run {run_id!r}")
        run = self.run(actor, run_id)
        return Plan(
            [
                self._ev(
                    actor,
                    EventKind.TAGS_SET,
                    f"run:{run.run_id}",
                    run.tenant,
                    run_id=run.run_id,
                    tags=_clean_tags(tags),
                )
            ]
        )

    def log_artifact(self, actor: Actor, run_id: Any, path: str, uri: str) -> Plan:
        authorize(actor, Action.WRITE, f"run {run_id!r}")
        run = self.run(actor, run_id)
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
            raise ValidationError(
                f"artifact path {path!r} must be relative without '..'",
                field="artifact_path",
                value=path,
            )
        return Plan(
            [
                self._ev(
                    actor,
                    EventKind.ARTIFACT_LOGGED,
                    f"run:{run.run_id}",
                    run.tenant,
                    run_id=run.run_id,
                    path=path,
                    uri=uri,
                    result=uri,
                )
            ],
            uri,
        )

    def end_run(self, actor: Actor, run_id: Any, status: Any = "FINISHED") -> Plan:
        authorize(actor, Action.WRITE, f"run {run_id!r}")
        names.check_run_status(status)
        if status == "RUNNING":
            raise ValidationError(
                "end_run status must be terminal (rule: one of FINISHED, FAILED, KILLED)",
                field="status",
                value=status,
            )
        run = self.run(actor, run_id, running=True)
        return Plan(
            [
                self._ev(
                    actor,
                    EventKind.RUN_ENDED,
                    f"run:{run.run_id}",
                    run.tenant,
                    run_id=run.run_id,
                    before=run.status,
                    after=status,
                )
            ]
        )
