"""Read-side views of the registry state: the plain dicts the SDK, CLI and HTTP API return.

Every view takes the acting principal and hides what another tenant owns::

    views = RegistryViews(state, settings, commands)
    views.get_version(actor, "churn", alias="production")["artifact_uri"]
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from raymlp.config import RegistrySettings
from raymlp.errors import NotFoundError
from raymlp.registry import names
from raymlp.registry.commands import ModelCommands, requires_approval
from raymlp.registry.events import Event
from raymlp.registry.query import search
from raymlp.registry.rbac import Action, Actor, authorize
from raymlp.registry.state import (
    ModelRecord,
    PromotionRequest,
    RegistryState,
    RunRecord,
    VersionRecord,
)
from raymlp.registry.tracking import TrackingCommands
from raymlp.registry.traffic_split import traffic_view

__all__ = ["RegistryViews", "version_dict", "run_dict", "request_dict"]


def version_dict(model: ModelRecord, rec: VersionRecord) -> dict[str, Any]:
    d = asdict(rec)
    d["aliases"] = model.aliases_of(rec.version)
    return d


def request_dict(req: PromotionRequest) -> dict[str, Any]:
    return asdict(req)


def run_dict(run: RunRecord, history: bool = False) -> dict[str, Any]:
    d = asdict(run)
    d.pop("history")
    if history:
        d["history"] = {k: [list(p) for p in v] for k, v in run.history.items()}
    return d


class RegistryViews:
    """Queries over the state (no side effects)."""

    def __init__(
        self,
        state: RegistryState,
        settings: RegistrySettings,
        models: ModelCommands,
        tracking: TrackingCommands,
    ) -> None:
        self.state = state
        self.settings = settings
        self.models = models
        self.tracking = tracking

    def _visible(self, actor: Actor, tenant: str) -> bool:
        return actor.is_admin or tenant == actor.tenant

    # -- models ------------------------------------------------------------------------------

    def _summary(self, model: ModelRecord) -> dict[str, Any]:
        latest = max(model.versions) if model.versions else None
        return {
            "name": model.name,
            "tenant": model.tenant,
            "description": model.description,
            "latest_version": latest,
            "num_versions": len(model.versions),
            "aliases": dict(sorted(model.aliases.items())),
            "created_at": model.created_at,
            "created_by": model.created_by,
            "approval_required": requires_approval(self.settings, model.name, "production"),
        }

    def list_models(self, actor: Actor) -> list[dict[str, Any]]:
        authorize(actor, Action.READ, "models")
        return [
            self._summary(m)
            for _, m in sorted(self.state.models.items())
            if self._visible(actor, m.tenant)
        ]

    def show_model(self, actor: Actor, name: str) -> dict[str, Any]:
        model = self.models.model(actor, name)
        out = self._summary(model)
        out["versions"] = [version_dict(model, v) for _, v in sorted(model.versions.items())]
        out["alias_history"] = {a: list(h) for a, h in sorted(model.alias_history.items())}
        out["requests"] = [
            request_dict(r)
            for r in sorted(
                (r for r in self.state.requests.values() if r.model == model.name),
                key=lambda r: -r.created_at,
            )
        ]
        return out

    def versions(self, actor: Actor, name: str) -> list[dict[str, Any]]:
        model = self.models.model(actor, name)
        return [version_dict(model, v) for _, v in sorted(model.versions.items())]

    def get_version(
        self, actor: Actor, name: str, version: Any = None, alias: str | None = None
    ) -> dict[str, Any]:
        """One version: by number, by alias, or (neither) the latest."""
        model = self.models.model(actor, name)
        if version is not None and alias is not None:
            from raymlp.errors import ValidationError

            raise ValidationError("give version or alias, not both", field="alias", value=alias)
        if alias is not None:
            v = self.resolve(actor, name, alias)
            return version_dict(model, model.versions[v])
        if version is None:
            if not model.versions:
                raise NotFoundError(f"model {name!r} has no versions", kind="version", name=name)
            version = max(model.versions)
        return version_dict(model, self.models.version(model, version))

    def get_traffic(self, actor: Actor, name: str) -> dict[str, Any]:
        """The serving traffic state of a model (canary, shadow, standby, steps)."""
        return traffic_view(self.models.model(actor, name))

    def resolve(self, actor: Actor, name: str, alias: str) -> int:
        model = self.models.model(actor, name)
        names.check_alias(alias)
        v = model.aliases.get(alias)
        if v is None:
            raise NotFoundError(
                f"model {name!r} has no alias {alias!r} (aliases: "
                f"{', '.join(sorted(model.aliases)) or 'none'})",
                kind="alias",
                name=alias,
                model=name,
            )
        return v

    def requests(
        self, actor: Actor, status: str | None = "pending", name: str | None = None
    ) -> list[dict[str, Any]]:
        authorize(actor, Action.READ, "promotion requests")
        return [
            request_dict(r)
            for r in sorted(self.state.requests.values(), key=lambda r: r.created_at)
            if self._visible(actor, r.tenant)
            and (status is None or r.status == status)
            and (name is None or r.model == name)
        ]

    def alias_snapshot(self, actor: Actor) -> dict[str, Any]:
        """Every alias of every visible model, as of ``seq``: what a watcher resyncs from."""
        authorize(actor, Action.READ, "aliases")
        return {
            "seq": self.state.last_seq,
            "aliases": {
                n: dict(m.aliases)
                for n, m in self.state.models.items()
                if self._visible(actor, m.tenant)
            },
        }

    # -- lineage -----------------------------------------------------------------------------

    def _ref(self, name: str, version: int) -> dict[str, Any]:
        model = self.state.models.get(name)
        rec = model.versions.get(version) if model else None
        out: dict[str, Any] = {"name": name, "version": version}
        if rec is not None and model is not None:
            out.update(stage=rec.stage, aliases=model.aliases_of(version), run_id=rec.run_id)
        return out

    def lineage(self, actor: Actor, name: str, version: Any) -> dict[str, Any]:
        """Upstream (run, feature views, dataset, code, parent chain) and downstream
        (fine-tunes of it, models using it as fallback) of one version."""
        model = self.models.model(actor, name)
        rec = self.models.version(model, version)
        lin = rec.lineage
        run = self.state.runs.get(rec.run_id or "")
        parents = []
        seen = {(name, rec.version)}
        cur = lin.get("parent_model")
        while cur and cur.get("version") is not None:
            key = (cur["name"], int(cur["version"]))
            if key in seen:
                break
            seen.add(key)
            parents.append(self._ref(*key))
            pm = self.state.models.get(key[0])
            prec = pm.versions.get(key[1]) if pm else None
            cur = prec.lineage.get("parent_model") if prec else None
        fallback = lin.get("fallback_model")
        if fallback:
            fallback = dict(fallback)
            fm = self.state.models.get(fallback["name"])
            if fallback.get("alias") and fm is not None:
                fallback["resolved_version"] = fm.aliases.get(fallback["alias"])
        return {
            "model": name,
            "version": rec.version,
            "artifact_uri": rec.artifact_uri,
            "run": (
                {
                    k: getattr(run, k)
                    for k in (
                        "run_id",
                        "experiment",
                        "name",
                        "status",
                        "params",
                        "metrics",
                        "git_commit",
                    )
                }
                if run is not None and self._visible(actor, run.tenant)
                else None
            ),
            "feature_views": list(lin.get("feature_views") or []),
            "dataset_rows": lin.get("dataset_rows"),
            "dataset_uri": lin.get("dataset_uri"),
            "code_commit": lin.get("code_commit") or (run.git_commit if run else None),
            "parents": parents,
            "fallback": fallback,
            "children": [
                self._ref(*k)
                for k in self.state.lineage.children(name, rec.version)
                if self._visible(actor, self.state.models[k[0]].tenant)
            ],
            "fallback_for": [
                self._ref(*k)
                for k in self.state.lineage.fallback_users(name)
                if self._visible(actor, self.state.models[k[0]].tenant)
            ],
        }

    def models_using_view(self, actor: Actor, view: str) -> list[dict[str, Any]]:
        """Every visible model version trained on feature view ``view``."""
        authorize(actor, Action.READ, "models")
        out = []
        for name, version in self.state.lineage.using_view(view):
            model = self.state.models[name]
            if not self._visible(actor, model.tenant):
                continue
            rec = model.versions[version]
            ref = next(fv for fv in rec.lineage.get("feature_views", []) if fv["name"] == view)
            out.append(
                {
                    "name": name,
                    "version": version,
                    "view": view,
                    "view_version": ref.get("version"),
                    "features": list(ref.get("features") or []),
                    "stage": rec.stage,
                    "aliases": model.aliases_of(version),
                    "tenant": model.tenant,
                }
            )
        return out

    # -- runs --------------------------------------------------------------------------------

    def list_experiments(self, actor: Actor) -> list[dict[str, Any]]:
        authorize(actor, Action.READ, "experiments")
        return [
            {
                "name": e.name,
                "tenant": e.tenant,
                "description": e.description,
                "tags": e.tags,
                "num_runs": len(e.run_ids),
                "created_at": e.created_at,
                "created_by": e.created_by,
            }
            for _, e in sorted(self.state.experiments.items())
            if self._visible(actor, e.tenant)
        ]

    def get_run(self, actor: Actor, run_id: str) -> dict[str, Any]:
        authorize(actor, Action.READ, f"run {run_id!r}")
        return run_dict(self.tracking.run(actor, run_id), history=True)

    def search_runs(
        self,
        actor: Actor,
        experiment: str,
        *,
        filter: str | None = None,
        order_by: str | list[str] | None = None,
        max_results: int = 1000,
    ) -> list[dict[str, Any]]:
        authorize(actor, Action.READ, f"experiment {experiment!r}")
        exp = self.tracking.experiment(actor, experiment)
        runs = [self.state.runs[r] for r in exp.run_ids]
        return [run_dict(r) for r in search(runs, filter, order_by, max_results)]

    # -- events ------------------------------------------------------------------------------

    def visible_events(
        self, actor: Actor, events: list[Event], kinds: list[str] | None = None
    ) -> list[dict[str, Any]]:
        authorize(actor, Action.READ, "events")
        return [
            e.to_dict()
            for e in events
            if self._visible(actor, e.tenant) and (not kinds or e.kind in kinds)
        ]
