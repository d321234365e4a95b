"""``p.registry``: model registry and experiment tracking for SDK users, jobs, CLI and Serve.

Every call acts as ``platform.principal`` (RBAC, tenants, audit). Mutations carry an idempotency
key and are retried while the registry actor restarts, so a call either returns once, durably,
or raises. Alias resolution on the hot path never calls the actor: :class:`RegistryWatcher`
keeps a local copy current from the registry's events::

    p = raymlp.connect()
    reg = p.registry
    run_id = reg.start_run("churn", params={"lr": 0.01})
    reg.log_metrics(run_id, {"val_auc": 0.91}, step=1)
    reg.end_run(run_id)
    v = reg.register("churn", "out/model", run_id=run_id, signature=sig)
    rid = reg.request_promotion("churn", v, reason="better AUC")
    p.as_principal(principal="bob").registry.approve(rid)
    reg.resolve("churn", "production")         # -> v, from process memory
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlp._private.git import detect_git_commit
from raymlp._private.model_version import ModelVersion
from raymlp._private.registry_reader import RegistryReader
from raymlp._private.registry_watcher import RegistryWatcher
from raymlp._private.rpc import RegistryRPC
from raymlp.errors import ValidationError
from raymlp.registry import artifacts, names
from raymlp.registry.commands import ANY
from raymlp.registry.signature import parse_signature
from raymlp.registry.traffic_split import KEEP

if TYPE_CHECKING:
    from raymlp.client import Platform

__all__ = [
    "RegistryClient",
    "ModelVersion",
    "RegistryWatcher",
    "AliasCache",
    "ANY",
]


class RegistryClient(RegistryReader):
    """The registry namespace of a :class:`~raymlp.client.Platform` (``p.registry``)."""

    #: How long calls keep retrying while the registry actor restarts.
    retry_s: float = 60.0

    def __init__(self, platform: Platform) -> None:
        super().__init__(RegistryRPC(platform.actor("registry"), platform.caller, self.retry_s))
        self._p = platform
        self._watcher: RegistryWatcher | None = None
        self._watcher_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def principal(self) -> dict[str, Any]:
        return self._rpc.principal

    def _call(self, method: str, *args: Any, _timeout: float | None = None, **kwargs: Any) -> Any:
        return self._rpc.call(method, *args, _timeout=_timeout, **kwargs)

    def _command(self, op: str, **kwargs: Any) -> Any:
        return self._rpc.command(op, **kwargs)

    def _query(self, op: str, **kwargs: Any) -> Any:
        return self._rpc.query(op, **kwargs)

    # -- experiments and runs --------------------------------------------------------------

    def create_experiment(
        self,
        name: str,
        *,
        description: str = "",
        tags: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> str:
        """Create an experiment; returns its name."""
        return self._command(
            "create_experiment", name=name, description=description, tags=tags, exist_ok=exist_ok
        )

    def list_experiments(self) -> list[dict[str, Any]]:
        return self._query("list_experiments")

    def start_run(
        self,
        experiment: str,
        params: dict[str, Any] | None = None,
        config: Any = None,
        tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        git_commit: str | None = None,
        *,
        name: str | None = None,
    ) -> str:
        """Start a run in ``experiment`` (created if needed); returns the run id.

        ``git_commit`` None records the HEAD of the working directory's checkout, if any
        (pass ``""`` to record none). ``config`` is the (JSON-able) config that produced it.
        """
        if git_commit is None:
            git_commit = detect_git_commit()
        return self._command(
            "start_run",
            experiment=experiment,
            name=name,
            params=params,
            config=config,
            tags=tags,
            parent_run_id=parent_run_id,
            git_commit=git_commit or None,
        )

    @contextlib.contextmanager
    def run(self, experiment: str, **kwargs: Any) -> Iterator[str]:
        """``with reg.run("exp", params=...) as run_id:`` ends FINISHED, or FAILED on error."""
        run_id = self.start_run(experiment, **kwargs)
        try:
            yield run_id
        except BaseException:
            self.end_run(run_id, "FAILED")
            raise
        self.end_run(run_id, "FINISHED")

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Params are immutable: re-logging a key with another value is a ConflictError."""
        self._command("log_params", run_id=run_id, params=params)

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log metric values at ``step`` (None: the next step of each metric). Durable on
        return; concurrent callers share one commit."""
        self._call("log_metrics", self.principal, run_id, metrics, step, uuid.uuid4().hex)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self._command("set_tags", run_id=run_id, tags=tags)

    def log_artifact(
        self, run_id: str, local_path: str | Path, artifact_path: str | None = None
    ) -> str:
        """Copy a file or directory under the run's artifacts; returns its URI."""
        src = Path(local_path)
        if not src.exists():
            raise ValidationError(
                f"artifact {str(src)!r} does not exist", field="local_path", value=str(src)
            )
        rel = artifact_path or src.name
        target = f"runs/{run_id}/artifacts/{rel}"
        self.get_run(run_id)  # fail before uploading: unknown run, other tenant
        if src.is_dir():
            uri = self._p.storage.upload_dir(src, target)
        else:
            self._p.storage.write_bytes(target, src.read_bytes())
            uri = self._p.storage.uri(target)
        return self._command("log_artifact", run_id=run_id, path=rel, uri=uri)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._command("end_run", run_id=run_id, status=status)

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run with params, latest metrics, per-step ``history``, tags, artifacts..."""
        return self._query("get_run", run_id=run_id)

    def search_runs(
        self,
        experiment: str,
        order_by: str | list[str] | None = None,
        filter: str | None = None,
        max_results: int = 1000,
    ) -> list[dict[str, Any]]:
        """Runs of ``experiment`` matching ``filter`` (e.g. ``"params.lr < 0.1 and status =
        'FINISHED'"``), sorted by ``order_by`` (e.g. ``"metrics.val_auc DESC"``)."""
        return self._query(
            "search_runs",
            experiment=experiment,
            filter=filter,
            order_by=order_by,
            max_results=max_results,
        )

    def best_run(
        self, experiment: str, metric: str, mode: str = "max", filter: str | None = None
    ) -> dict[str, Any] | None:
        """The run with the best ``metric`` (``mode`` max or min), or None if none has it."""
        if mode not in ("max", "min"):
            raise ValidationError(f"mode {mode!r} must be 'max' or 'min'", field="mode", value=mode)
        key = metric if metric.startswith("metrics.") else f"metrics.{metric}"
        runs = self.search_runs(
            experiment,
            order_by=f"{key} {'DESC' if mode == 'max' else 'ASC'}",
            filter=filter,
            max_results=1,
        )
        if not runs or key.split(".", 1)[1] not in runs[0]["metrics"]:
            return None
        return runs[0]

    # -- models ------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        artifact_dir: str | Path,
        run_id: str | None = None,
        signature: Any = None,
        metrics: dict[str, float] | None = None,
        lineage: Any = None,
        card: str | None = None,
        tenant: str | None = None,
        *,
        description: str = "",
    ) -> int:
        """Register a new version of ``name``; returns its number (never reused).

        The directory is copied to ``<root>/models/<name>/<version>/`` together with
        ``signature.json`` and ``card.md``. ``signature`` is checked now (ValidationError
        naming the field); ``lineage`` records feature views + table versions, dataset rows,
        code commit, parent and fallback models.
        """
        names.check_model_name(name)
        sig = parse_signature(signature) if signature is not None else None
        src = Path(artifact_dir)
        if not src.is_dir():
            raise ValidationError(
                f"artifact directory {str(src)!r} does not exist (rule: an existing directory)",
                field="artifact_dir",
                value=str(src),
            )
        storage = self._p.storage
        staged = artifacts.new_staging_path()
        try:
            storage.upload_dir(src, staged)
            if sig is not None:
                storage.write_bytes(
                    f"{staged}/signature.json", sig.model_dump_json(indent=2).encode()
                )
            if card:
                storage.write_bytes(f"{staged}/card.md", str(card).encode())
            return self._command(
                "register",
                name=name,
                staged_path=staged,
                run_id=run_id,
                signature=sig.model_dump(mode="json") if sig is not None else None,
                metrics=metrics,
                lineage=_plain(lineage),
                card=card,
                description=description,
                tenant=tenant,
            )
        finally:
            artifacts.discard(storage, staged)  # moved on success; dropped on failure

    def list_models(self) -> list[dict[str, Any]]:
        return self._query("list_models")

    def show(self, name: str) -> dict[str, Any]:
        """Everything about a model: versions, aliases (+history), promotion requests."""
        return self._query("show_model", name=name)

    def versions(self, name: str) -> list[ModelVersion]:
        return [ModelVersion.from_dict(d) for d in self._query("versions", name=name)]

    def set_stage(self, name: str, version: int, stage: str) -> dict[str, Any]:
        """none → staging → production → archived (production follows the production alias)."""
        return self._command("set_stage", name=name, version=version, stage=stage)

    def promote(
        self,
        name: str,
        version: int,
        alias: str = "production",
        *,
        expected_version: int | None | str = ANY,
    ) -> dict[str, Any]:
        """Move ``alias`` to ``version`` now. Refused (PermissionDeniedError) for an alias that
        needs approval: use :meth:`request_promotion`. ``expected_version`` (a version, or None
        for "unset") makes the move conditional: a concurrent mover makes it a ConflictError."""
        return self._command(
            "promote", name=name, version=version, alias=alias, expected_version=expected_version
        )

    def set_alias(
        self, name: str, alias: str, version: int, *, expected_version: int | None | str = ANY
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (same rules as :meth:`promote`)."""
        return self._command(
            "promote",
            name=name,
            version=version,
            alias=alias,
            expected_version=expected_version,
            reason="set",
        )

    def delete_alias(self, name: str, alias: str) -> dict[str, Any]:
        return self._command("delete_alias", name=name, alias=alias)

    def rollback(self, name: str, alias: str = "production") -> dict[str, Any]:
        """Move ``alias`` back to its previous holder."""
        return self._command("rollback", name=name, alias=alias)

    def set_traffic(
        self,
        name: str,
        *,
        canary_version: int | None | str = KEEP,
        canary_weight: float | str = KEEP,
        shadow_version: int | None | str = KEEP,
        standby_version: int | None | str = KEEP,
        steps: list[float] | None | str = KEEP,
        reason: str = "",
    ) -> dict[str, Any]:
        """Change the serving traffic state of ``name`` (developer role or above); fields not
        given keep their value, ``None`` clears a version. The gateways apply it within
        seconds (event ``traffic_changed``). Returns the new state.

        Example::

            reg.set_traffic("churn", canary_version=4, canary_weight=10, steps=[10, 50, 100])
            reg.set_traffic("churn", canary_weight=0, reason="rollback")
        """
        changes = {
            k: v
            for k, v in (
                ("canary_version", canary_version),
                ("canary_weight", canary_weight),
                ("shadow_version", shadow_version),
                ("standby_version", standby_version),
                ("steps", steps),
            )
            if not (isinstance(v, str) and v == KEEP)
        }
        return self._command("set_traffic", name=name, reason=reason, **changes)

    def record_event(self, kind: str, model: str, payload: dict[str, Any] | None = None) -> Any:
        """Append an external event (``monitor_alert``) about ``model`` to the registry's event
        stream: audited, replayed, delivered to subscribers and webhooks."""
        return self._command("record_event", kind=kind, model=model, payload=payload)

    def requires_approval(self, name: str, alias: str = "production") -> bool:
        return self._call("requires_approval", self.principal, name, alias)

    def request_promotion(
        self, name: str, version: int, alias: str = "production", reason: str = ""
    ) -> str:
        """Ask for ``alias`` to move to ``version``; returns the request id (``pr-N``)."""
        return self._command(
            "request_promotion", name=name, version=version, alias=alias, reason=reason
        )

    def approve(self, request_id: str, comment: str = "") -> dict[str, Any]:
        """Approve (needs role approver, and not the requester): the alias moves now."""
        return self._command("approve", request_id=request_id, comment=comment)

    def reject(self, request_id: str, reason: str) -> str:
        return self._command("reject", request_id=request_id, reason=reason)

    def requests(self, name: str | None = None, status: str | None = "pending") -> list[dict]:
        return self._query("requests", name=name, status=status)

    def lineage(self, name: str, version: int) -> dict[str, Any]:
        """Upstream (run, feature views @ versions, data, code, parents) and downstream
        (fine-tunes, fallback users) of a version."""
        return self._query("lineage", name=name, version=version)

    def models_using_view(self, view_name: str) -> list[dict[str, Any]]:
        """Model versions trained on feature view ``view_name`` (name, version, view_version,
        stage, aliases)."""
        return self._query("models_using_view", view=view_name)

    def artifact_uri(self, name: str, version: int) -> str:
        return self._p.storage.uri("models", name, str(int(version)))

    # -- events and the hot path -------------------------------------------------------------

    def events(
        self, after_seq: int = 0, kinds: list[str] | None = None, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """The audit log (from the Delta event table): who did what, when, before/after."""
        return self._call("audit_events", self.principal, after_seq, kinds, limit)

    def wait_for_events(
        self, after_seq: int, timeout_s: float = 10.0, kinds: list[str] | None = None
    ) -> dict[str, Any]:
        """One long-poll: ``{"events", "last_seq", "resync"}``."""
        return self._call(
            "wait_for_events", self.principal, after_seq, timeout_s, kinds, _timeout=timeout_s + 30
        )

    def watcher(self) -> RegistryWatcher:
        """The shared alias cache of this client (started on first use)."""
        with self._watcher_lock:
            if self._watcher is None:
                self._watcher = RegistryWatcher(self._rpc)
                self._watcher.start()
            return self._watcher

    def resolve(self, name: str, alias: str) -> int:
        """alias → version from process memory (no actor call), kept current by events."""
        return self.watcher().resolve(name, alias)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    return value


#: The hot-path alias cache is the watcher.
AliasCache = RegistryWatcher
