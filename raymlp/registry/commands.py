"""Model commands: check every rule against the current state, then say which events to write.

A command never changes the state itself. It returns a :class:`Plan` (the events, the answer for
the caller, and artifact copies to do before the commit); the registry commits the events to
the event log and only then applies them. A command that breaks a rule raises before anything
is written, so a rejected call leaves the registry as it was::

    plan = ModelCommands(state, settings, models_uri, storage).promote(actor, "churn", 3, "canary")
    # plan.events == [Event(kind="alias_moved", payload={"alias": "canary", "before": 2, ...})]

**Approved versions.** A version is *approved* for an alias whose moves need approval
(:func:`requires_approval`) when the registry state shows it went through the approval path:
an approved promotion request for that (model, version, alias), or the version holds the alias
now or held it before (the alias's history: a protected alias only ever moves by an approval,
or by a rollback to an earlier holder). :func:`unapproved_aliases` lists the protected aliases a
version is not approved for; the traffic commands refuse real traffic to such a version beyond
``max_unapproved_canary_weight`` (see ``traffic_split.py``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raymlp.config import RegistrySettings
from raymlp.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from raymlp.registry import artifacts, names
from raymlp.registry.events import Event, EventKind
from raymlp.registry.lineage import parse_lineage
from raymlp.registry.rbac import Action, Actor, authorize, check_not_requester, check_tenant
from raymlp.registry.signature import parse_signature
from raymlp.registry.state import ModelRecord, PromotionRequest, RegistryState, VersionRecord

if TYPE_CHECKING:
    from raymlp.storage import Storage

__all__ = [
    "Plan",
    "ANY",
    "ModelCommands",
    "requires_approval",
    "approved_for",
    "unapproved_aliases",
    "STAGING_PREFIX",
]

#: ``expected_version`` default: no precondition on the current holder of an alias.
ANY = "any"

#: Where clients upload an artifact before ``register`` moves it to ``models/<name>/<v>``.
STAGING_PREFIX = "models/_staging/"
_STAGED_RE = re.compile(r"^models/_staging/[0-9a-f]{8,64}$")


@dataclass
class Plan:
    """What a command decided: events to commit, the caller's answer, work to do around it."""

    events: list[Event]
    result: Any = None
    #: (staged path, final path) copied before the commit (relative to the storage root)
    artifact_copies: list[tuple[str, str]] = field(default_factory=list)
    #: paths removed after the commit
    cleanup: list[str] = field(default_factory=list)


def requires_approval(settings: RegistrySettings, model: str, alias: str) -> bool:
    """Whether moving ``alias`` of ``model`` needs an approved promotion request."""
    if alias not in settings.approval_aliases:
        return False
    return settings.approval_overrides.get(model, settings.approval_required)


def approved_for(state: RegistryState, model: ModelRecord, version: int, alias: str) -> bool:
    """Whether ``version`` went through the approval path of ``alias`` (see the module
    docstring): it holds or held the alias, or a promotion request for it was approved."""
    if model.aliases.get(alias) == version or version in model.alias_history.get(alias, []):
        return True
    return any(
        r.status == "approved" and r.model == model.name and r.version == version and r.alias == alias
        for r in state.requests.values()
    )


def unapproved_aliases(
    state: RegistryState, settings: RegistrySettings, model: ModelRecord, version: int
) -> list[str]:
    """The aliases of ``model`` that need approval and that ``version`` is not approved for
    (empty: real traffic to it is not a promotion of an unapproved version)."""
    return [
        a
        for a in settings.approval_aliases
        if requires_approval(settings, model.name, a) and not approved_for(state, model, version, a)
    ]


class ModelCommands:
    """Registered models, versions, stages, aliases and promotion approvals."""

    def __init__(
        self,
        state: RegistryState,
        settings: RegistrySettings,
        models_uri: Any,
        storage: Storage | None = None,
    ) -> None:
        self.state = state
        self.settings = settings
        #: ``models_uri(name, version) -> str``: where a version's artifact lives
        self.models_uri = models_uri
        #: the storage root, to digest (and check the factory of) a staged artifact at
        #: ``register``; None records no digests (such versions load with a warning)
        self.storage = storage

    # -- lookups (raise the errors users see) ---------------------------------------------

    def model(self, actor: Actor, name: Any, action: str = Action.READ) -> ModelRecord:
        names.check_model_name(name)
        model = self.state.models.get(name)
        if model is None:
            raise NotFoundError(f"model {name!r} does not exist", kind="model", name=name)
        check_tenant(actor, model.tenant, f"model {name!r}")
        authorize(actor, action, f"model {name!r}")
        return model

    def version(self, model: ModelRecord, version: Any) -> VersionRecord:
        v = names.check_version(version)
        rec = model.versions.get(v)
        if rec is None:
            known = sorted(model.versions)
            raise NotFoundError(
                f"model {model.name!r} has no version {v} (versions: "
                f"{', '.join(map(str, known)) or 'none'})",
                kind="version",
                name=model.name,
                version=v,
            )
        return rec

    def request(self, actor: Actor, request_id: Any) -> PromotionRequest:
        req = self.state.requests.get(str(request_id))
        if req is None:
            raise NotFoundError(
                f"promotion request {request_id!r} does not exist",
                kind="request",
                name=str(request_id),
            )
        check_tenant(actor, req.tenant, f"request {req.id}")
        return req

    def _event(self, actor: Actor, kind: str, entity: str, tenant: str, **payload: Any) -> Event:
        return Event(kind=kind, entity=entity, principal=actor.name, tenant=tenant, payload=payload)

    # -- register --------------------------------------------------------------------------

    def register(
        self,
        actor: Actor,
        name: Any,
        staged_path: str | None,
        *,
        run_id: str | None = None,
        signature: Any = None,
        metrics: dict[str, Any] | None = None,
        lineage: Any = None,
        card: str | None = None,
        description: str = "",
        tenant: str | None = None,
    ) -> Plan:
        names.check_model_name(name)
        authorize(actor, Action.WRITE, f"model {name!r}")
        tenant = tenant or actor.tenant
        if tenant != actor.tenant:
            authorize(actor, Action.ADMIN, f"a model of tenant {tenant!r}")
        if staged_path is not None and not _STAGED_RE.match(staged_path):
            raise ValidationError(
                f"staged artifact path {staged_path!r} is not under {STAGING_PREFIX} "
                "(rule: upload through the client)",
                field="artifact_dir",
                value=staged_path,
            )
        sig = parse_signature(signature).model_dump(mode="json") if signature is not None else None
        clean_metrics = {
            names.check_key(k, "metrics"): names.check_metric_value(k, v)
            for k, v in (metrics or {}).items()
        }
        lin = parse_lineage(lineage)
        if run_id is not None and lin.run_id is not None and run_id != lin.run_id:
            raise ValidationError(
                f"run_id {run_id!r} differs from lineage.run_id {lin.run_id!r} (rule: the same "
                "run)",
                field="run_id",
                value=run_id,
            )
        run_id = run_id or lin.run_id
        if run_id is not None:
            run = self.state.runs.get(run_id)
            if run is None:
                raise NotFoundError(f"run {run_id!r} does not exist", kind="run", name=run_id)
            check_tenant(actor, run.tenant, f"run {run_id!r}")
        lin = lin.model_copy(update={"run_id": run_id})
        for field_name in ("parent_model", "fallback_model"):
            ref = getattr(lin, field_name)
            if ref is None:
                continue
            try:
                other = self.model(actor, ref.name)
                if ref.version is not None:
                    self.version(other, ref.version)
                elif ref.alias is not None:
                    names.check_alias(ref.alias)
            except (NotFoundError, ValidationError, PermissionDeniedError) as e:
                raise type(e)(
                    f"lineage.{field_name}: {e.message}",
                    **{**e.context, "field": f"lineage.{field_name}"},
                ) from None
        if card is not None and not isinstance(card, str):
            raise ValidationError(
                f"card must be text (markdown), got {type(card).__name__}",
                field="card",
            )
        digests = self._staged_digests(name, staged_path)
        events: list[Event] = []
        model = self.state.models.get(name)
        if model is None:
            events.append(
                self._event(
                    actor,
                    EventKind.MODEL_CREATED,
                    f"model:{name}",
                    tenant,
                    name=name,
                    description=description or "",
                )
            )
            version = 1
        else:
            check_tenant(actor, model.tenant, f"model {name!r}")
            if tenant != model.tenant:
                raise ConflictError(
                    f"model {name!r} belongs to tenant {model.tenant!r}, not {tenant!r}",
                    name=name,
                    tenant=model.tenant,
                )
            version = model.next_version
        final = f"models/{name}/{version}"
        events.append(
            self._event(
                actor,
                EventKind.VERSION_REGISTERED,
                f"model:{name}/{version}",
                tenant,
                name=name,
                version=version,
                artifact_uri=self.models_uri(name, version),
                run_id=run_id,
                signature=sig,
                metrics=clean_metrics,
                lineage=lin.model_dump(mode="json", exclude_none=True),
                card=card,
                description=description or "",
                digests=digests,
                result=version,
            )
        )
        copies = [(staged_path, final)] if staged_path else []
        return Plan(
            events, version, artifact_copies=copies, cleanup=[staged_path] if staged_path else []
        )

    def _staged_digests(self, name: str, staged_path: str | None) -> dict[str, str] | None:
        """The digests of the staged artifact (recorded in the version's event), after checking
        that its ``model.json`` names an allowed factory. None without an artifact or storage.

        Hashing here, before the copy to ``models/<name>/<v>``, means a staged file changed
        after this point no longer matches: the version is then refused at load (fail closed).
        """
        if staged_path is None or self.storage is None:
            return None
        digests = artifacts.tree_digests(self.storage.filesystem, self.storage.path(staged_path))
        if "model.json" in digests:
            try:
                spec = json.loads(self.storage.read_bytes(staged_path, "model.json"))
            except ValueError as e:
                raise ValidationError(
                    f"model.json of the artifact is not JSON: {e}", field="model.json"
                ) from None
            factory = spec.get("factory") if isinstance(spec, dict) else None
            allowed = self.settings.model_factory_modules
            if factory is not None and not artifacts.factory_allowed(factory, allowed):
                raise ValidationError(
                    f"model.json of {name!r} names factory {factory!r}, which is not in an "
                    f"allowed module (rule: registry.model_factory_modules = {allowed})",
                    field="model.json:factory",
                    value=factory,
                    rule="model_factory_modules",
                )
        return digests

    # -- stages ------------------------------------------------------------------------------

    def set_stage(self, actor: Actor, name: Any, version: Any, stage: Any) -> Plan:
        model = self.model(actor, name, Action.WRITE)
        rec = self.version(model, version)
        names.check_stage(stage)
        if stage == rec.stage:
            return Plan([], {"name": model.name, "version": rec.version, "stage": stage})
        if stage == "production":
            # The production stage follows the production alias (see STAGE_TRANSITIONS).
            return self.promote(actor, name, rec.version, "production", reason="set_stage")
        allowed = names.STAGE_TRANSITIONS[rec.stage]
        if stage not in allowed:
            how = (
                "move or roll back the 'production' alias"
                if rec.stage == "production"
                else f"allowed from {rec.stage!r}: {', '.join(allowed) or 'none'}"
            )
            raise ConflictError(
                f"model {model.name!r} version {rec.version} cannot go from stage "
                f"{rec.stage!r} to {stage!r} (rule: {how})",
                field="stage",
                value=stage,
                current=rec.stage,
            )
        if stage == "archived" and model.aliases_of(rec.version):
            held = model.aliases_of(rec.version)
            raise ConflictError(
                f"model {model.name!r} version {rec.version} holds alias(es) {held}; move them "
                "before archiving it",
                field="stage",
                aliases=held,
            )
        ev = self._event(
            actor,
            EventKind.STAGE_CHANGED,
            f"model:{model.name}/{rec.version}",
            model.tenant,
            name=model.name,
            version=rec.version,
            before=rec.stage,
            after=stage,
            result={"name": model.name, "version": rec.version, "stage": stage},
        )
        return Plan([ev], ev.payload["result"])

    # -- aliases -----------------------------------------------------------------------------

    def _check_expected(self, model: ModelRecord, alias: str, expected: Any) -> None:
        if expected == ANY:
            return
        current = model.aliases.get(alias)
        want = None if expected is None else names.check_version(expected)
        if current != want:
            raise ConflictError(
                f"alias {alias!r} of model {model.name!r} is held by "
                f"{'version ' + str(current) if current else 'no version'}, not "
                f"{'version ' + str(want) if want else 'no version'} as expected (rule: "
                "someone moved it first; re-read and retry)",
                alias=alias,
                current=current,
                expected=want,
            )

    def _alias_events(
        self, actor: Actor, model: ModelRecord, alias: str, target: int, how: str, **extra: Any
    ) -> list[Event]:
        before = model.aliases.get(alias)
        events: list[Event] = []
        if alias == "production":
            if before is not None and before != target and before in model.versions:
                old = model.versions[before]
                if old.stage != "archived":
                    events.append(
                        self._event(
                            actor,
                            EventKind.STAGE_CHANGED,
                            f"model:{model.name}/{before}",
                            model.tenant,
                            name=model.name,
                            version=before,
                            before=old.stage,
                            after="archived",
                            cause=f"production moved to {target}",
                        )
                    )
            new = model.versions[target]
            if new.stage != "production":
                events.append(
                    self._event(
                        actor,
                        EventKind.STAGE_CHANGED,
                        f"model:{model.name}/{target}",
                        model.tenant,
                        name=model.name,
                        version=target,
                        before=new.stage,
                        after="production",
                        cause="holds the production alias",
                    )
                )
        result = {"name": model.name, "alias": alias, "version": target, "previous": before}
        events.append(
            self._event(
                actor,
                EventKind.ALIAS_MOVED,
                f"model:{model.name}",
                model.tenant,
                name=model.name,
                alias=alias,
                before=before,
                after=target,
                reason=how,
                **extra,
                result=result,
            )
        )
        return events

    def promote(
        self,
        actor: Actor,
        name: Any,
        version: Any,
        alias: Any = "production",
        *,
        expected_version: Any = ANY,
        reason: str = "promote",
    ) -> Plan:
        """Move ``alias`` to ``version`` directly (refused when the alias needs approval)."""
        model = self.model(actor, name, Action.WRITE)
        rec = self.version(model, version)
        names.check_alias(alias)
        if requires_approval(self.settings, model.name, alias):
            raise PermissionDeniedError(
                f"moving alias {alias!r} of model {model.name!r} needs an approved promotion "
                "request (rule: approval_required; use request_promotion)",
                principal=actor.name,
                action="promote",
                rule="approval_required",
                model=model.name,
                alias=alias,
                version=rec.version,
            )
        self._check_expected(model, alias, expected_version)
        if rec.stage == "archived":
            raise ConflictError(
                f"model {model.name!r} version {rec.version} is archived (rule: restore it to "
                "staging before giving it an alias)",
                field="version",
                value=rec.version,
            )
        if model.aliases.get(alias) == rec.version:
            res = {
                "name": model.name,
                "alias": alias,
                "version": rec.version,
                "previous": rec.version,
            }
            return Plan([], res)
        events = self._alias_events(actor, model, alias, rec.version, reason)
        return Plan(events, events[-1].payload["result"])

    def delete_alias(
        self, actor: Actor, name: Any, alias: Any, *, expected_version: Any = ANY
    ) -> Plan:
        model = self.model(actor, name, Action.WRITE)
        names.check_alias(alias)
        if alias not in model.aliases:
            raise NotFoundError(
                f"model {model.name!r} has no alias {alias!r}", kind="alias", name=alias
            )
        if requires_approval(self.settings, model.name, alias):
            authorize(actor, Action.ADMIN, f"delete protected alias {alias!r}")
        self._check_expected(model, alias, expected_version)
        before = model.aliases[alias]
        ev = self._event(
            actor,
            EventKind.ALIAS_DELETED,
            f"model:{model.name}",
            model.tenant,
            name=model.name,
            alias=alias,
            before=before,
            after=None,
            result={"name": model.name, "alias": alias, "previous": before},
        )
        return Plan([ev], ev.payload["result"])

    def rollback(self, actor: Actor, name: Any, alias: Any = "production") -> Plan:
        """Move ``alias`` back to its previous holder (no approval: it was approved before)."""
        model = self.model(actor, name, Action.ROLLBACK)
        names.check_alias(alias)
        hist = model.alias_history.get(alias) or []
        if not hist:
            raise ConflictError(
                f"alias {alias!r} of model {model.name!r} has no earlier holder to roll back to",
                alias=alias,
            )
        target = hist[-1]
        if alias != "production" and model.versions[target].stage == "archived":
            # production's previous holder was archived by the move itself and comes back;
            # any other alias refuses to point at an archived version.
            raise ConflictError(
                f"alias {alias!r} of model {model.name!r} would roll back to version {target}, "
                "which is archived (rule: restore it to staging first)",
                alias=alias,
                version=target,
            )
        events = self._alias_events(actor, model, alias, target, "rollback")
        return Plan(events, events[-1].payload["result"])

    # -- approvals ---------------------------------------------------------------------------

    def request_promotion(
        self, actor: Actor, name: Any, version: Any, alias: Any = "production", reason: str = ""
    ) -> Plan:
        model = self.model(actor, name, Action.WRITE)
        rec = self.version(model, version)
        names.check_alias(alias)
        if rec.stage == "archived":
            raise ConflictError(
                f"model {model.name!r} version {rec.version} is archived (rule: restore it to "
                "staging first)",
                field="version",
                value=rec.version,
            )
        if model.aliases.get(alias) == rec.version:
            raise ConflictError(
                f"model {model.name!r} version {rec.version} already holds alias {alias!r}",
                alias=alias,
                version=rec.version,
            )
        for req in self.state.requests.values():
            if (
                req.status == "pending"
                and req.model == model.name
                and req.version == rec.version
                and req.alias == alias
            ):
                raise ConflictError(
                    f"request {req.id} already asks to promote model {model.name!r} version "
                    f"{rec.version} to {alias!r}",
                    request_id=req.id,
                )
        request_id = f"pr-{self.state.request_counter + 1}"
        ev = self._event(
            actor,
            EventKind.PROMOTION_REQUESTED,
            f"request:{request_id}",
            model.tenant,
            request_id=request_id,
            name=model.name,
            version=rec.version,
            alias=alias,
            from_version=model.aliases.get(alias),
            reason=str(reason or ""),
            result=request_id,
        )
        return Plan([ev], request_id)

    def _pending(self, req: PromotionRequest) -> None:
        if req.status != "pending":
            raise ConflictError(
                f"request {req.id} is already {req.status} (by {req.decided_by})",
                request_id=req.id,
                status=req.status,
            )

    def approve(self, actor: Actor, request_id: Any, comment: str = "") -> Plan:
        req = self.request(actor, request_id)
        authorize(actor, Action.APPROVE, f"request {req.id}")
        self._pending(req)
        check_not_requester(actor, req.requested_by, req.id)
        model = self.state.models[req.model]
        rec = model.versions[req.version]
        current = model.aliases.get(req.alias)
        if current != req.from_version:
            raise ConflictError(
                f"alias {req.alias!r} of model {model.name!r} moved from version "
                f"{req.from_version} to {current} since {req.id} was made (rule: request again)",
                request_id=req.id,
                expected=req.from_version,
                current=current,
            )
        if rec.stage == "archived":
            raise ConflictError(
                f"model {model.name!r} version {rec.version} was archived after {req.id} was made",
                request_id=req.id,
            )
        events = [
            self._event(
                actor,
                EventKind.PROMOTION_APPROVED,
                f"request:{req.id}",
                model.tenant,
                request_id=req.id,
                name=model.name,
                version=req.version,
                alias=req.alias,
                comment=str(comment or ""),
            )
        ]
        events += self._alias_events(
            actor, model, req.alias, req.version, "approve", request_id=req.id
        )
        return Plan(events, events[-1].payload["result"])

    def reject(self, actor: Actor, request_id: Any, reason: str) -> Plan:
        req = self.request(actor, request_id)
        if actor.name != req.requested_by:  # withdrawing one's own request needs no approver
            authorize(actor, Action.APPROVE, f"request {req.id}")
        self._pending(req)
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError(
                "a rejection needs a reason (rule: non-empty text)", field="reason", value=reason
            )
        ev = self._event(
            actor,
            EventKind.PROMOTION_REJECTED,
            f"request:{req.id}",
            req.tenant,
            request_id=req.id,
            name=req.model,
            version=req.version,
            alias=req.alias,
            reason=reason.strip(),
            result=req.id,
        )
        return Plan([ev], req.id)
