"""The ``feature_store`` actor: definitions, the online store and commit bookkeeping.

A cache of the storage root: ``__init__`` (also after a crash or a lost node) reloads the newest
registry snapshot and rebuilds the online store from the Delta tables (newest row per entity),
so every acknowledged ``apply``, ``commit_files`` and ``push`` survives. Heavy pipelines
(ingestion, point-in-time joins, materialisation reads) run on the client side with Ray Data;
this actor only validates, commits and serves lookups. The logic lives in ``raymlp.features``.

With ``feature_store.online_shards: N > 1`` the online store lives in ``N`` instances of this
class named ``feature_store_online_{i}`` (each holds the entities whose key hash is ``i`` mod
``N``); the main ``feature_store`` instance then holds no online data.
"""

from __future__ import annotations

import pickle
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa

from actors._base import PlatformActor
from raymlp.config import FeatureRepo, Principal
from raymlp.errors import NotFoundError, PermissionDeniedError, ValidationError
from raymlp.features import offline
from raymlp.features.definitions import FeatureRegistry, load_registry, save_registry
from raymlp.features.dtypes import SEQ_COLUMN
from raymlp.features.hashing import hash_keys
from raymlp.features.ingest import with_seq
from raymlp.features.materialize import latest_in_file_groups
from raymlp.features.online import STATUS_NAMES, OnlineTable
from raymlp.features.validation import conform

if TYPE_CHECKING:
    from deltalake import DeltaTable

SHARD_PREFIX = "feature_store_online_"
_WRITE_ROLES = {"developer", "admin"}


def _principal(data: dict[str, Any] | None) -> Principal:
    if data is None:
        return Principal(name="local-admin", tenant="default", roles=["admin"])
    return Principal.model_validate(data)


class _GroupCommit:
    """Concurrent pushes to one view share one Delta commit (fewer, larger files).

    Every caller enqueues its rows, then takes the commit lock; whoever holds it commits all
    rows pending at that moment and resolves every caller's future.
    """

    def __init__(self, commit: Any) -> None:
        self._commit = commit
        self._pending: list[tuple[pa.Table, Future]] = []
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def submit(self, table: pa.Table) -> Any:
        fut: Future = Future()
        with self._lock:
            self._pending.append((table, fut))
        with self._commit_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if batch:
                try:
                    result = self._commit([t for t, _ in batch])
                except BaseException as e:  # every caller of the batch sees the failure
                    for _, f in batch:
                        f.set_exception(e)
                else:
                    for _, f in batch:
                        f.set_result(result)
        return fut.result()


class FeatureStoreActor(PlatformActor):
    """Feature definitions + online store (see module docstring). RPCs return plain data."""

    def __init__(self, platform_config: dict[str, Any], instance_name: str | None = None) -> None:
        super().__init__(platform_config, instance_name or "feature_store")
        self.num_shards = self.config.feature_store.online_shards
        self.shard: int | None = None
        if self.instance_name.startswith(SHARD_PREFIX):
            self.shard = int(self.instance_name[len(SHARD_PREFIX) :])
        self.serves_online = self.shard is not None or self.num_shards == 1
        self._lock = threading.RLock()
        self._seq_lock = threading.Lock()
        self._last_seq = time.time_ns()
        self._registry: FeatureRegistry = load_registry(self.storage)
        self._online: dict[str, OnlineTable] = {}
        self._groups: dict[str, _GroupCommit] = {}
        self._materialized: dict[str, int] = {}
        self._rebuilt_at = time.time()
        if self.serves_online:
            for name in self._registry.names("feature_view"):
                if self._registry.view(name).online:
                    self._rebuild_online(name)
        self._rebuilt_at = time.time()

    # -- helpers --------------------------------------------------------------------------------

    def _require_write(self, principal: dict[str, Any] | None, action: str) -> Principal:
        p = _principal(principal)
        if not _WRITE_ROLES & set(p.roles):
            raise PermissionDeniedError(
                f"principal {p.name!r} may not {action} (rule: role developer or admin)",
                principal=p.name,
                action=action,
                required_role="developer",
            )
        return p

    def _check_tenant(self, view: str, principal: dict[str, Any] | None) -> None:
        p = _principal(principal)
        if "admin" in p.roles:
            return
        for kind in ("feature_view", "on_demand_feature_view"):
            if view in self._registry.names(kind):
                tenant = self._registry.record(kind, view)["tenant"]
                if tenant != p.tenant:
                    raise PermissionDeniedError(
                        f"view {view!r} belongs to tenant {tenant!r}, not {p.tenant!r}",
                        principal=p.name,
                        action="read",
                        view=view,
                    )

    def _sync(self, serial: int | None) -> None:
        """Shards follow the main actor's registry: reload when a caller saw a newer serial."""
        if serial is None or serial <= self._registry.serial:
            return
        with self._lock:
            if serial <= self._registry.serial:
                return
            self._set_registry(load_registry(self.storage))

    def _set_registry(self, reg: FeatureRegistry) -> None:
        self._registry = reg
        if not self.serves_online:
            return
        for name in reg.names("feature_view"):
            fv = reg.view(name)
            table = self._online.get(name)
            if not fv.online:
                self._online.pop(name, None)
            elif table is None:
                self._rebuild_online(name)
            else:
                table.redefine(
                    [(f.name, f.dtype) for f in fv.features], int(fv.ttl.total_seconds() * 1e6)
                )

    def _next_seq(self, n: int) -> int:
        with self._seq_lock:
            first = max(self._last_seq + 1, time.time_ns())
            self._last_seq = first + max(n, 1) - 1
            return first

    def _new_online_table(self, name: str) -> OnlineTable:
        fv = self._registry.view(name)
        return OnlineTable(
            self._registry.key_columns(fv),
            [(f.name, f.dtype) for f in fv.features],
            fv.timestamp_field,
            int(fv.ttl.total_seconds() * 1e6),
        )

    def _mine(self, table: pa.Table, keys: list[str]) -> pa.Table:
        """The rows of this shard (all rows when unsharded)."""
        if self.shard is None or self.num_shards == 1 or table.num_rows == 0:
            return table
        h = hash_keys([table.column(k) for k in keys]) % np.uint64(self.num_shards)
        return table.filter(pa.array(h == np.uint64(self.shard)))

    def _rebuild_online(self, name: str) -> None:
        fv = self._registry.view(name)
        table = self._new_online_table(name)
        dt = offline.open_table(self.storage, name)
        version = None
        if dt is not None:
            version = dt.version()
            keys = [k for k, _ in self._registry.key_columns(fv)]
            schema = pa.schema(dt.schema().to_arrow())
            cols = [
                *keys,
                fv.timestamp_field,
                SEQ_COLUMN,
                *(f.name for f in fv.features if f.name in schema.names),
            ]
            for part in latest_in_file_groups(
                self.storage, list(dt.file_uris()), schema, keys, fv.timestamp_field, cols
            ):
                table.upsert(self._mine(part, keys))
            with self._seq_lock:  # never hand out a sequence number already in the table
                self._last_seq = max(self._last_seq, table.max_seq)
        self._online[name] = table
        if version is not None:
            self._materialized[name] = version

    # -- definitions ----------------------------------------------------------------------------

    def definitions(self, known_serial: int | None = None) -> dict[str, Any] | None:
        """The registry as plain data, or None if the caller's ``known_serial`` is current."""
        reg = self._registry
        if known_serial is not None and known_serial == reg.serial:
            return None
        return reg.to_dict()

    def apply(
        self, repo: dict[str, Any], force: bool = False, principal: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Apply a feature repo (see :meth:`FeatureRegistry.plan_apply`); returns the changes."""
        p = self._require_write(principal, "apply feature definitions")
        parsed = FeatureRepo.model_validate(repo)
        with self._lock:
            for fv in parsed.feature_views:
                if fv.name in self._registry.names("feature_view"):
                    self._check_tenant(fv.name, principal)
            tables = {
                fv.name: offline.table_columns(self.storage, fv.name) for fv in parsed.feature_views
            }
            plan = self._registry.plan_apply(
                parsed, force=force, applied_by=p.name, tenant=p.tenant, table_schemas=tables
            )
            new = plan.registry
            # Tables first, registry second: a crash in between leaves a table the next apply
            # adopts (create is idempotent), never a definition without its table.
            for ch in plan.changes:
                if ch.kind == "feature_view" and (ch.table_op or ch.action == "unchanged"):
                    fv = new.view(ch.name)
                    offline.ensure_table(
                        self.storage,
                        fv,
                        new.key_columns(fv),
                        ch.table_op,
                        metadata={
                            "raymlp.op": f"apply:{ch.action}",
                            "raymlp.principal": p.name,
                            "raymlp.definition_version": str(ch.version),
                        },
                    )
            if plan.changed:
                save_registry(self.storage, new)
                replaced = [c.name for c in plan.changes if c.action == "replaced"]
                for name in replaced:
                    self._online.pop(name, None)
                    self._materialized.pop(name, None)
                self._set_registry(new)
            return {"serial": self._registry.serial, "changes": [c.summary() for c in plan.changes]}

    # -- offline writes -------------------------------------------------------------------------

    def reserve_seq(self, n: int) -> int:
        """Hand out ``n`` ingestion sequence numbers; returns the first."""
        return self._next_seq(int(n))

    def commit_files(
        self,
        view: str,
        files: list[dict[str, Any]],
        txn_id: str,
        principal: dict[str, Any] | None = None,
    ) -> int:
        """Commit data files written by an ingestion pipeline (idempotent per ``txn_id``)."""
        p = self._require_write(principal, "ingest")
        self._check_tenant(view, principal)
        self._registry.view(view)  # NotFoundError for an unknown view
        for f in files:
            path = str(f.get("path", ""))
            if "/" in path or not path.startswith("part-") or not path.endswith(".parquet"):
                raise ValidationError(
                    f"data file {path!r} is not an ingestion file of {view!r}",
                    field="files",
                    value=path,
                    rule="part-*.parquet",
                )
        version, _ = offline.commit_files(
            self.storage,
            view,
            files,
            txn_id=txn_id,
            metadata={
                "raymlp.op": "ingest",
                "raymlp.principal": p.name,
                "raymlp.rows": str(sum(int(f.get("num_records", 0)) for f in files)),
            },
        )
        return version

    def push(
        self,
        view: str,
        data: pa.Table,
        principal: dict[str, Any] | None = None,
        serial: int | None = None,
    ) -> dict[str, Any]:
        """Streaming ingestion: validate, append to Delta, then update the online store.

        Returns ``{"version", "rows"}`` once the rows are committed (durable).
        """
        p = self._require_write(principal, "push")
        self._sync(serial)
        self._check_tenant(view, principal)
        fv = self._registry.view(view)
        keys = self._registry.key_columns(fv)
        if isinstance(data, dict):
            data = pa.table(data)
        table = conform(data, fv, keys)
        if table.num_rows == 0:
            return {"version": None, "rows": 0}
        with self._lock:
            group = self._groups.get(view)
            if group is None:
                group = self._groups[view] = _GroupCommit(
                    lambda tables, v=view, who=p.name: self._commit_push(v, tables, who)
                )
        version = group.submit(table)
        return {"version": version, "rows": table.num_rows}

    def _commit_push(self, view: str, tables: list[pa.Table], who: str) -> int:
        fv = self._registry.view(view)
        keys = self._registry.key_columns(fv)
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        table = with_seq(table, self._next_seq(table.num_rows), len(keys) + 1)
        version = offline.append(
            self.storage,
            view,
            table,
            {"raymlp.op": "push", "raymlp.principal": who, "raymlp.rows": str(table.num_rows)},
        )
        online = self._online.get(view) if fv.online and self.serves_online else None
        if online is not None:
            online.upsert(table)
        return version

    def table_versions(self, views: list[str] | None = None) -> dict[str, int | None]:
        """``{view: current Delta version}`` (None for a view without a table)."""
        names = views if views is not None else self._registry.names("feature_view")
        out = {}
        for name in names:
            self._registry.view(name)
            dt = offline.open_table(self.storage, name)
            out[name] = dt.version() if dt is not None else None
        return out

    def compact(self, view: str, principal: dict[str, Any] | None = None) -> dict[str, Any]:
        """Merge small files of a view's table and write a checkpoint (keeps recovery fast)."""
        self._require_write(principal, "compact")
        self._registry.view(view)
        dt = offline.open_table(self.storage, view)
        if dt is None:
            return {"version": None}
        metrics = dt.optimize.compact()
        # It existed before the compaction, so it still does.
        dt = cast("DeltaTable", offline.open_table(self.storage, view))
        dt.create_checkpoint()
        return {"version": dt.version(), "metrics": metrics}

    # -- online store ---------------------------------------------------------------------------

    def online_read(
        self,
        key_sets: list[list[Any]],
        requests: list[tuple[str, list[str], int]],
        serial: int | None = None,
        now_us: int | None = None,
    ) -> dict[str, Any]:
        """One batch lookup: ``requests`` are ``(view, features, index into key_sets)``.

        Returns ``{"serial": registry serial, "views": {view: (statuses, {feature: values})}}``
        with statuses as a bytes string (0 present, 1 not_found, 2 expired).
        """
        self._sync(serial)
        if not self.serves_online:
            raise ValidationError(
                f"this feature store keeps its online store in shards ({SHARD_PREFIX}*)",
                field="online_shards",
                value=self.num_shards,
                rule="call the shards",
            )
        now = now_us if now_us is not None else time.time_ns() // 1000
        out = {}
        for view, features, ks in requests:
            table = self._online.get(view)
            if table is None:
                fv = self._registry.view(view)  # NotFoundError for unknown views
                if not fv.online:
                    raise ValidationError(
                        f"view {view!r} is not online (rule: online: true)",
                        field="features",
                        value=view,
                        rule="online view",
                    )
                raise NotFoundError(
                    f"view {view!r} has no online table", kind="online_table", name=view
                )
            status, values = table.read(key_sets[ks], features, now)
            out[view] = (status.tobytes(), values)
        return {"serial": self._registry.serial, "views": out}

    def online_read_packed(self, blob: bytes) -> bytes:
        """:meth:`online_read` with arguments and reply pickled by the caller and here.

        The hot path of serving: Ray serialises one ``bytes`` object much faster than nested
        lists and dicts (measured ~0.15 ms less per call), and both ends are this codebase.
        """
        key_sets, requests, serial = pickle.loads(blob)
        return pickle.dumps(self.online_read(key_sets, requests, serial), protocol=5)

    def online_upsert(self, view: str, data: pa.Table, serial: int | None = None) -> int:
        """Merge rows (with ``_seq``) into the online store (materialisation)."""
        self._sync(serial)
        table = self._online.get(view)
        if table is None:
            fv = self._registry.view(view)
            if not fv.online or not self.serves_online:
                return 0
            table = self._online[view] = self._new_online_table(view)
        keys = [k for k, _ in table.keys]
        return table.upsert(self._mine(data, keys))

    def materialization_state(self, view: str) -> dict[str, Any]:
        """The table version the online store has caught up with (None: never)."""
        fv = self._registry.view(view)
        return {"view": view, "online": fv.online, "version": self._materialized.get(view)}

    def set_materialized(self, view: str, version: int) -> None:
        self._registry.view(view)
        prev = self._materialized.get(view)
        self._materialized[view] = version if prev is None else max(prev, version)

    def online_stats(self) -> dict[str, Any]:
        return {
            "instance": self.instance_name,
            "shard": self.shard,
            "rebuilt_at": self._rebuilt_at,
            "views": {n: len(t) for n, t in self._online.items()},
            "status_names": list(STATUS_NAMES),
        }

    # -- catalog --------------------------------------------------------------------------------

    def list_views(self, principal: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One summary row per feature view and on-demand view the principal may see."""
        p = _principal(principal)
        rows = []
        for kind in ("feature_view", "on_demand_feature_view"):
            for name in self._registry.names(kind):
                rec = self._registry.record(kind, name)
                if "admin" not in p.roles and rec["tenant"] != p.tenant:
                    continue
                d = rec["definition"]
                rows.append(
                    {
                        "name": name,
                        "kind": kind,
                        "entities": d.get("entities", []),
                        "features": [f["name"] for f in d.get("schema", [])],
                        "ttl": d.get("ttl"),
                        "online": d.get("online", False),
                        "owner": d.get("owner", ""),
                        "version": rec["version"],
                        "tenant": rec["tenant"],
                        "updated_at": rec["updated_at"],
                    }
                )
        return rows

    def describe(self, view: str, principal: dict[str, Any] | None = None) -> dict[str, Any]:
        """Definition, history, table versions/rows/freshness and online state of a view."""
        self._check_tenant(view, principal)
        if view in self._registry.names("on_demand_feature_view"):
            rec = self._registry.record("on_demand_feature_view", view)
            return {"name": view, "kind": "on_demand_feature_view", **_record_view(rec)}
        rec = self._registry.record("feature_view", view)
        fv = self._registry.view(view)
        info = offline.table_info(self.storage, view, fv.timestamp_field)
        for k in ("first_event_time", "last_event_time", "last_commit_time"):
            if isinstance(info.get(k), datetime):
                info[k] = info[k].astimezone(UTC).isoformat()
        out = {
            "name": view,
            "kind": "feature_view",
            **_record_view(rec),
            "join_keys": self._registry.key_columns(fv),
            "table": {"uri": offline.table_uri(self.storage, view), **info},
            "online": {
                "enabled": fv.online,
                "materialized_version": self._materialized.get(view),
                "entities": len(self._online[view]) if view in self._online else None,
            },
        }
        return out


def _record_view(rec: dict[str, Any]) -> dict[str, Any]:
    d = rec["definition"]
    return {
        "definition": d,
        "description": d.get("description", ""),
        "owner": d.get("owner", ""),
        "tags": d.get("tags", {}),
        "version": rec["version"],
        "tenant": rec["tenant"],
        "created_at": rec["created_at"],
        "updated_at": rec["updated_at"],
        "applied_by": rec["applied_by"],
        "history": [
            {k: h[k] for k in ("version", "applied_at", "applied_by", "action", "detail")}
            for h in rec["history"]
        ],
    }
