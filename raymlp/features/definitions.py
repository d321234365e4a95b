"""The feature registry: entities, feature views and on-demand views, with their versions.

Pure logic: :class:`FeatureRegistry` holds the current definitions as plain data (so they pickle
and serialise as JSON), :meth:`FeatureRegistry.plan_apply` turns a :class:`~raymlp.config.FeatureRepo`
into a list of changes (refusing incompatible schema changes unless forced), and
:func:`save_registry` / :func:`load_registry` keep it durable under ``<root>/features/_registry/``
as one immutable JSON snapshot per change (``registry-00000042.json``); the highest serial wins.

Example::

    reg = FeatureRegistry()
    plan = reg.plan_apply(load_config_file(FeatureRepo, "configs/features/churn.yaml"),
                          applied_by="alice", tenant="default")
    reg = plan.registry          # the new state
    [c.summary() for c in plan.changes]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from raymlp.config import Entity, FeatureField, FeatureRepo, FeatureView, OnDemandFeatureView
from raymlp.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
    ValidationError,
)
from raymlp.features.dtypes import output_column
from raymlp.features.tokenize import sensitive_columns, sensitive_keys
from raymlp.storage import Storage

__all__ = [
    "REGISTRY_DIR",
    "Change",
    "ApplyPlan",
    "FeatureRef",
    "RetrievalPlan",
    "FeatureRegistry",
    "parse_ref",
    "save_registry",
    "load_registry",
]

#: Where registry snapshots live, under the storage root.
REGISTRY_DIR = "features/_registry"

Kind = Literal["entity", "feature_view", "on_demand_feature_view"]
_KINDS: tuple[Kind, ...] = ("entity", "feature_view", "on_demand_feature_view")
_MODELS: dict[Kind, type[BaseModel]] = {
    "entity": Entity,
    "feature_view": FeatureView,
    "on_demand_feature_view": OnDemandFeatureView,
}


@dataclass
class Change:
    """What applying one object did.

    Attributes:
        action: ``created``, ``updated``, ``unchanged`` or ``replaced`` (an incompatible change
            forced through: the view's table starts a new, empty schema version).
        table_op: what the view's Delta table needs: ``create``, ``add_columns``, ``replace``
            or None.
        new_columns: ``(name, dtype)`` of features added to an existing table.
    """

    kind: Kind
    name: str
    action: str
    version: int
    detail: str = ""
    table_op: str | None = None
    new_columns: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "version": self.version,
            "detail": self.detail,
        }


@dataclass
class ApplyPlan:
    """The outcome of :meth:`FeatureRegistry.plan_apply`: the changes and the new registry."""

    changes: list[Change]
    registry: FeatureRegistry

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)


@dataclass(frozen=True)
class FeatureRef:
    """``view:feature``; ``column`` is the output column name ``view__feature``."""

    view: str
    feature: str

    @property
    def column(self) -> str:
        return output_column(self.view, self.feature)

    def __str__(self) -> str:
        return f"{self.view}:{self.feature}"


def parse_ref(ref: str) -> FeatureRef:
    """Parse ``"view:feature"`` (``"view:*"`` means every feature of the view)."""
    if not isinstance(ref, str):
        raise ValidationError(
            f"feature reference {ref!r} is not a string (rule: 'view:feature')",
            field="features",
            value=repr(ref),
            rule="view:feature",
        )
    view, sep, feat = ref.partition(":")
    if not sep or not view or not feat:
        raise ValidationError(
            f"feature reference {ref!r} is not 'view:feature'",
            field="features",
            value=ref,
            rule="view:feature",
        )
    return FeatureRef(view.strip(), feat.strip())


@dataclass
class RetrievalPlan:
    """Which view columns to fetch, and which on-demand views to run, for a feature list.

    Attributes:
        refs: the requested references (``view:*`` expanded), in request order.
        views: feature view -> features to fetch (requested ones plus on-demand inputs).
        on_demand: on-demand views to evaluate, in request order, with the outputs wanted.
        request_fields: request-time inputs the on-demand views need (from the entity rows).
        output_columns: the requested output columns, in order.
        hidden_columns: columns fetched only as on-demand inputs (dropped from the result).
    """

    refs: list[FeatureRef]
    views: dict[str, list[str]]
    on_demand: list[tuple[OnDemandFeatureView, list[str]]]
    request_fields: list[FeatureField]
    output_columns: list[str]
    hidden_columns: list[str]


class FeatureRegistry:
    """The definitions in force, as plain data: ``{kind: {name: record}}`` plus a ``serial``.

    A record is ``{"definition": {...}, "version": n, "created_at", "updated_at", "applied_by",
    "tenant", "history": [{"version", "applied_at", "applied_by", "action", "detail",
    "definition"}]}``. ``serial`` grows by one with every change that was saved.
    """

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.serial: int = int(state.get("serial", 0))
        self._records: dict[Kind, dict[str, dict[str, Any]]] = {
            k: dict(state.get(k, {})) for k in _KINDS
        }
        self._cache: dict[tuple[Kind, str], Any] = {}

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, **{k: self._records[k] for k in _KINDS}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureRegistry:
        return cls(data)

    # -- lookups ------------------------------------------------------------------------------

    def names(self, kind: Kind) -> list[str]:
        return sorted(self._records[kind])

    def record(self, kind: Kind, name: str) -> dict[str, Any]:
        rec = self._records[kind].get(name)
        if rec is None:
            label = kind.replace("_", " ")
            raise NotFoundError(
                f"{label} {name!r} is not defined (run `raymlp features apply`)",
                kind=kind,
                name=name,
            )
        return rec

    def _model(self, kind: Kind, name: str) -> Any:
        key = (kind, name)
        obj = self._cache.get(key)
        if obj is None:
            obj = _MODELS[kind].model_validate(self.record(kind, name)["definition"])
            self._cache[key] = obj
        return obj

    def entity(self, name: str) -> Entity:
        return self._model("entity", name)

    def view(self, name: str) -> FeatureView:
        """The feature view ``name`` (NotFoundError if undefined)."""
        if (
            name not in self._records["feature_view"]
            and name in self._records["on_demand_feature_view"]
        ):
            raise ValidationError(
                f"{name!r} is an on-demand view: it has no table (rule: a feature view)",
                field="view",
                value=name,
                rule="feature view",
            )
        return self._model("feature_view", name)

    def on_demand_view(self, name: str) -> OnDemandFeatureView:
        return self._model("on_demand_feature_view", name)

    def has_view(self, name: str) -> bool:
        return name in self._records["feature_view"]

    def key_columns(self, view: str | FeatureView) -> list[tuple[str, str]]:
        """``[(join_key, dtype)]`` of a view, in entity order."""
        fv = self.view(view) if isinstance(view, str) else view
        return _keys_of(fv, {n: self.entity(n) for n in fv.entities})

    def sensitive_keys(self, view: str | FeatureView) -> list[str]:
        """Join key columns of a view stored as tokens (its sensitive entities' keys)."""
        fv = self.view(view) if isinstance(view, str) else view
        return sensitive_keys(fv, {n: self.entity(n) for n in fv.entities})

    def sensitive_columns(self, view: str | FeatureView) -> list[str]:
        """Every column of a view stored as tokens: sensitive join keys and features."""
        fv = self.view(view) if isinstance(view, str) else view
        return sensitive_columns(fv, {n: self.entity(n) for n in fv.entities})

    def tenant_of(self, kind: Kind, name: str) -> str:
        """The tenant that owns an object (the tenant of whoever created it)."""
        return str(self.record(kind, name)["tenant"])

    def plan_retrieval(self, features: list[str]) -> RetrievalPlan:
        """Resolve feature references (unknown view or feature -> NotFoundError)."""
        if not features:
            raise ValidationError(
                "no features requested (rule: at least one 'view:feature')",
                field="features",
                rule="non-empty",
            )
        refs: list[FeatureRef] = []
        for raw in features:
            ref = parse_ref(raw)
            if ref.feature == "*":
                if self.has_view(ref.view):
                    names = [f.name for f in self.view(ref.view).features]
                else:
                    names = [f.name for f in self.on_demand_view(ref.view).features]
                refs.extend(FeatureRef(ref.view, n) for n in names)
            else:
                refs.append(ref)
        views: dict[str, list[str]] = {}
        odfv_wanted: dict[str, list[str]] = {}
        request: dict[str, FeatureField] = {}
        hidden: list[str] = []
        wanted_cols = [r.column for r in refs]
        dupes = sorted({c for c in wanted_cols if wanted_cols.count(c) > 1})
        if dupes:
            raise ValidationError(
                f"features {dupes!r} are requested twice (rule: unique)",
                field="features",
                value=dupes,
                rule="unique",
            )

        def need(view: str, feat: str, *, hide: bool) -> None:
            fv = self.view(view)
            if feat not in {f.name for f in fv.features}:
                raise NotFoundError(
                    f"feature {feat!r} is not in view {view!r}",
                    kind="feature",
                    name=f"{view}:{feat}",
                )
            lst = views.setdefault(view, [])
            if feat not in lst:
                lst.append(feat)
                col = output_column(view, feat)
                if hide and col not in wanted_cols and col not in hidden:
                    hidden.append(col)

        for ref in refs:
            if self.has_view(ref.view):
                need(ref.view, ref.feature, hide=False)
                continue
            odfv = self.on_demand_view(ref.view)  # NotFoundError names the view
            if ref.feature not in {f.name for f in odfv.features}:
                raise NotFoundError(
                    f"feature {ref.feature!r} is not in on-demand view {ref.view!r}",
                    kind="feature",
                    name=str(ref),
                )
            odfv_wanted.setdefault(ref.view, []).append(ref.feature)
        for name in odfv_wanted:
            odfv = self.on_demand_view(name)
            for src in odfv.sources:
                s = parse_ref(src)
                need(s.view, s.feature, hide=True)
            for f in odfv.request_schema:
                request.setdefault(f.name, f)
        on_demand = [(self.on_demand_view(n), outs) for n, outs in odfv_wanted.items()]
        return RetrievalPlan(refs, views, on_demand, list(request.values()), wanted_cols, hidden)

    # -- apply ---------------------------------------------------------------------------------

    def plan_apply(
        self,
        repo: FeatureRepo,
        *,
        force: bool = False,
        applied_by: str = "unknown",
        tenant: str = "default",
        admin: bool = False,
        table_schemas: dict[str, dict[str, str]] | None = None,
        now: float | None = None,
    ) -> ApplyPlan:
        """Diff ``repo`` against the registry; the plan's registry has the changes applied.

        Objects absent from ``repo`` are left as they are (apply is additive). Incompatible
        changes (a view's join keys, key types or timestamp field; a feature's dtype, also
        against a column still present in the table; what is ``sensitive``) raise
        ConflictError unless ``force``.

        Every object belongs to the tenant that created it. Unless ``admin``, PermissionDenied
        is raised (nothing changes) when ``tenant`` would change another tenant's entity,
        feature view or on-demand view (``force`` or not), define a view on another tenant's
        entity, an on-demand view on another tenant's view, or (by changing its own entity's
        keys) replace another tenant's view.

        Args:
            table_schemas: for views with a Delta table, ``{column: type-string}`` of the table
                as it is (to catch re-adding a removed feature with another dtype).
        """
        now = time.time() if now is None else now
        table_schemas = table_schemas or {}
        new = FeatureRegistry(json.loads(json.dumps(self.to_dict())))
        changes: list[Change] = []
        entities = {n: self.entity(n) for n in self.names("entity")}
        entities.update({e.name: e for e in repo.entities})

        def owned(kind: Kind, name: str, ch: Change | None = None) -> None:
            """Refuse a change to an object of another tenant (``ch``: the change, when it is
            known; None: any use of the object)."""
            if admin or name not in self._records[kind]:
                return
            if ch is not None and ch.action == "unchanged":
                return
            owner = self.tenant_of(kind, name)
            if owner != tenant:
                label = kind.replace("_", " ")
                doing = "change" if ch is not None else "build on"
                raise PermissionDeniedError(
                    f"{label} {name!r} belongs to tenant {owner!r}: tenant {tenant!r} may not "
                    f"{doing} it (rule: entities, feature views and on-demand views are owned "
                    "by their tenant; only it, or an admin, changes or builds on them)",
                    principal=applied_by,
                    action="apply",
                    kind=kind,
                    name=name,
                    owner_tenant=owner,
                    tenant=tenant,
                    rule="tenant-owned",
                )

        for ent in repo.entities:
            ch = new._put("entity", ent, "", applied_by, tenant, now)
            owned("entity", ent.name, ch)
            changes.append(ch)

        def differs(kind: Kind, obj: Any) -> Change | None:
            """A stand-in change when ``obj`` differs from the stored object of that name."""
            old = self._records[kind].get(obj.name)
            if old is not None and old["definition"] != _definition(obj):
                return Change(kind, obj.name, "updated", old["version"])
            return None

        for fv in repo.feature_views:
            # The view's own owner first, so the refusal names what was to be changed.
            owned("feature_view", fv.name, differs("feature_view", fv))
            for e in fv.entities:
                owned("entity", e)
            missing = [e for e in fv.entities if e not in entities]
            if missing:
                raise NotFoundError(
                    f"feature view {fv.name!r} names entity {missing[0]!r}, which is not defined "
                    "(rule: define it in the same file or apply it first)",
                    kind="entity",
                    name=missing[0],
                    view=fv.name,
                )
            if fv.name in self._records["on_demand_feature_view"]:
                raise ConflictError(
                    f"{fv.name!r} is already an on-demand view (rule: unique)", name=fv.name
                )
            keys = _keys_of(fv, entities)
            clash = [
                k for k, _ in keys if k in {f.name for f in fv.features} or k == fv.timestamp_field
            ]
            if clash:
                raise ValidationError(
                    f"feature view {fv.name!r}: column {clash[0]!r} is both a join key and a "
                    "feature/timestamp (rule: distinct columns)",
                    field=f"feature_views.{fv.name}",
                    value=clash[0],
                    rule="distinct columns",
                )
            old = self._records["feature_view"].get(fv.name)
            if old is None:
                ch = new._put("feature_view", fv, "", applied_by, tenant, now)
                ch.table_op = "create"
                changes.append(ch)
                continue
            prev = self.view(fv.name)
            old_entities = entities | _old_entities(self)
            problems, added = _view_diff(
                prev,
                fv,
                _keys_of(prev, old_entities),
                keys,
                table_schemas.get(fv.name, {}),
            )
            old_sens = sensitive_keys(prev, old_entities)
            new_sens = sensitive_keys(fv, entities)
            if old_sens != new_sens:
                problems.append(f"sensitive join keys {old_sens} -> {new_sens}")
            if problems and not force:
                raise ConflictError(
                    f"feature view {fv.name!r}: incompatible change: {problems[0]} "
                    "(rule: join keys, timestamp field and feature dtypes cannot change; "
                    "use --force to start a new, empty table version)",
                    view=fv.name,
                    problems=problems,
                )
            ch = new._put(
                "feature_view",
                fv,
                "; ".join(problems),
                applied_by,
                tenant,
                now,
                forced=bool(problems),
            )
            owned("feature_view", fv.name, ch)
            if problems:
                ch.table_op = "replace"
            elif added:
                ch.table_op, ch.new_columns = "add_columns", added
            changes.append(ch)

        views = {n: self.view(n) for n in self.names("feature_view")}
        views.update({v.name: v for v in repo.feature_views})
        for od in repo.on_demand_feature_views:
            owned("on_demand_feature_view", od.name, differs("on_demand_feature_view", od))
            if od.name in views:
                raise ConflictError(
                    f"{od.name!r} is already a feature view (rule: unique)", name=od.name
                )
            for src in od.sources:
                ref = parse_ref(src)
                owned("feature_view", ref.view)
                if ref.view not in views:
                    raise NotFoundError(
                        f"on-demand view {od.name!r}: source view {ref.view!r} is not defined",
                        kind="feature_view",
                        name=ref.view,
                    )
                if ref.feature not in {f.name for f in views[ref.view].features}:
                    raise NotFoundError(
                        f"on-demand view {od.name!r}: source {src!r} names no feature of "
                        f"{ref.view!r}",
                        kind="feature",
                        name=src,
                    )
            ch = new._put("on_demand_feature_view", od, "", applied_by, tenant, now)
            owned("on_demand_feature_view", od.name, ch)
            changes.append(ch)

        # Existing views whose entity changed keys: incompatible like a key change in the view.
        for ent in repo.entities:
            if ent.name not in self._records["entity"]:
                continue
            before = self.entity(ent.name)
            if (before.join_keys, before.value_type, before.sensitive) == (
                ent.join_keys,
                ent.value_type,
                ent.sensitive,
            ):
                continue
            users = [
                n
                for n in self.names("feature_view")
                if ent.name in self.view(n).entities
                and n not in {v.name for v in repo.feature_views}
            ]
            if users and not force:
                raise ConflictError(
                    f"entity {ent.name!r}: changing join keys/type/sensitive from "
                    f"{before.join_keys}/{before.value_type}/{before.sensitive} to "
                    f"{ent.join_keys}/{ent.value_type}/{ent.sensitive} breaks views {users!r} "
                    "(rule: keys cannot change; use --force)",
                    entity=ent.name,
                    views=users,
                )
            for n in users:
                # Forcing empties the users' tables: never another tenant's.
                owned("feature_view", n, Change("feature_view", n, "replaced", 0))
            for n in users:
                ch = new._put(
                    "feature_view",
                    self.view(n),
                    f"entity {ent.name!r} keys changed",
                    applied_by,
                    tenant,
                    now,
                    forced=True,
                )
                ch.table_op = "replace"
                changes.append(ch)
        if any(c.action != "unchanged" for c in changes):
            new.serial = self.serial + 1
        return ApplyPlan(changes, new)

    def _put(
        self,
        kind: Kind,
        obj: Any,
        detail: str,
        applied_by: str,
        tenant: str,
        now: float,
        *,
        forced: bool = False,
    ) -> Change:
        definition = _definition(obj)
        recs = self._records[kind]
        old = recs.get(obj.name)
        self._cache.pop((kind, obj.name), None)
        if old is not None and old["definition"] == definition and not forced:
            return Change(kind, obj.name, "unchanged", old["version"])
        if old is None:
            version, action, created = 1, "created", now
            history: list[dict[str, Any]] = []
        else:
            version, created, history = old["version"] + 1, old["created_at"], list(old["history"])
            action = "replaced" if forced else "updated"
            if not detail:
                detail = _describe_diff(old["definition"], definition)
        history.append(
            {
                "version": version,
                "applied_at": now,
                "applied_by": applied_by,
                "action": action,
                "detail": detail,
                "definition": definition,
            }
        )
        recs[obj.name] = {
            "definition": definition,
            "version": version,
            "created_at": created,
            "updated_at": now,
            "applied_by": applied_by,
            "tenant": old["tenant"] if old else tenant,
            "history": history,
        }
        return Change(kind, obj.name, action, version, detail)


def _definition(obj: BaseModel) -> dict[str, Any]:
    """An object as stored: ``sensitive: false`` (the default) is left out, so definitions
    stored before the flag existed compare equal to the same objects applied again."""
    d = obj.model_dump(mode="json", by_alias=True)
    if d.get("sensitive") is False:
        del d["sensitive"]
    for key in ("schema", "request_schema"):
        for f in d.get(key) or []:
            if f.get("sensitive") is False:
                del f["sensitive"]
    return d


def _old_entities(reg: FeatureRegistry) -> dict[str, Entity]:
    return {n: reg.entity(n) for n in reg.names("entity")}


def _keys_of(fv: FeatureView, entities: dict[str, Entity]) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    for name in fv.entities:
        ent = entities.get(name)
        if ent is None:
            raise NotFoundError(
                f"entity {name!r} of view {fv.name!r} is not defined", kind="entity", name=name
            )
        for k in ent.join_keys:
            if k in {x for x, _ in keys}:
                raise ValidationError(
                    f"feature view {fv.name!r}: join key {k!r} appears in two entities "
                    "(rule: distinct join keys)",
                    field="entities",
                    value=k,
                    rule="distinct join keys",
                )
            keys.append((k, ent.value_type))
    return keys


def _view_diff(
    old: FeatureView,
    new: FeatureView,
    old_keys: list[tuple[str, str]],
    new_keys: list[tuple[str, str]],
    table_columns: dict[str, str],
) -> tuple[list[str], list[tuple[str, str]]]:
    """(incompatibilities, features added to the table)."""
    problems: list[str] = []
    if old_keys != new_keys:
        problems.append(f"join keys {old_keys} -> {new_keys}")
    if old.timestamp_field != new.timestamp_field:
        problems.append(f"timestamp_field {old.timestamp_field!r} -> {new.timestamp_field!r}")
    old_types = {f.name: f.dtype for f in old.features}
    old_sensitive = {f.name: f.sensitive for f in old.features}
    added: list[tuple[str, str]] = []
    for f in new.features:
        before = old_types.get(f.name) or table_columns.get(f.name)
        if before is not None and before != f.dtype:
            problems.append(f"feature {f.name!r} dtype {before} -> {f.dtype}")
        elif f.name in old_sensitive and old_sensitive[f.name] != f.sensitive:
            # Tokens and raw values in one column would never match each other.
            problems.append(
                f"feature {f.name!r} sensitive {old_sensitive[f.name]} -> {f.sensitive}"
            )
        elif f.name not in table_columns and f.name not in old_types:
            added.append((f.name, f.dtype))
    return problems, added


def _describe_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key == "schema":
            o = {f["name"] for f in old.get(key, [])}
            n = {f["name"] for f in new.get(key, [])}
            if n - o:
                parts.append(f"added {sorted(n - o)}")
            if o - n:
                parts.append(f"removed {sorted(o - n)}")
            if n == o:
                parts.append("schema descriptions")
        else:
            parts.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return "; ".join(parts)


# -- persistence -------------------------------------------------------------------------------


def _snapshot_name(serial: int) -> str:
    return f"registry-{serial:08d}.json"


def save_registry(storage: Storage, registry: FeatureRegistry) -> str:
    """Write the registry as a new immutable snapshot; returns its relative path."""
    rel = f"{REGISTRY_DIR}/{_snapshot_name(registry.serial)}"
    storage.write_bytes(rel, json.dumps(registry.to_dict(), sort_keys=True).encode("utf-8"))
    return rel


def load_registry(storage: Storage) -> FeatureRegistry:
    """The newest snapshot under ``features/_registry`` (an empty registry if none)."""
    names = [
        n
        for n in storage.listdir(REGISTRY_DIR)
        if n.startswith("registry-") and n.endswith(".json")
    ]
    for name in sorted(names, reverse=True):
        try:
            data = json.loads(storage.read_bytes(REGISTRY_DIR, name))
        except (StorageError, ValueError):
            continue  # a torn write of a newer snapshot: fall back to the previous one
        return FeatureRegistry.from_dict(data)
    return FeatureRegistry()
