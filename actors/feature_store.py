"""The ``feature_store`` actor: definitions, the online store and commit bookkeeping.

A cache of the storage root: ``__init__`` (also after a crash or a lost node) reloads the newest
registry snapshot and rebuilds the online store from the Delta tables (newest row per entity),
so every acknowledged ``apply``, ``commit_files`` and ``push`` survives. Heavy pipelines
(ingestion, point-in-time joins, materialisation reads) run on the client side with Ray Data;
this actor only validates, commits and serves lookups. The logic lives in ``raymlp.features``.

With ``feature_store.online_shards: N > 1`` the online store lives in ``N`` instances of this
class named ``feature_store_online_{i}`` (each holds the entities whose key hash is ``i`` mod
``N``); the main ``feature_store`` instance then holds no online data.

Each instance that serves online numbers its online changes in a
:class:`~raymlp.features.online_changes.ChangeLog`: the ModelServer replicas' near-caches follow
it (``online_watch``), and a push or materialisation is acknowledged only once every leased
near-cache has applied its change.
"""

from __future__ import annotations

import json
import pickle
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import ray

from actors._base import PlatformActor
from raymlp._private.credentials import Authenticator
from raymlp.config import FeatureRepo, Principal
from raymlp.errors import NotFoundError, PermissionDeniedError, ValidationError
from raymlp.features import offline
from raymlp.features.definitions import FeatureRegistry, load_registry, save_registry
from raymlp.features.dtypes import SEQ_COLUMN
from raymlp.features.hashing import hash_keys
from raymlp.features.ingest import with_seq
from raymlp.features.materialize import latest_in_file_groups
from raymlp.features.online import STATUS_NAMES, OnlineTable
from raymlp.features.online_changes import ChangeLog
from raymlp.features.tokenize import Tokenizer
from raymlp.features.validation import conform

if TYPE_CHECKING:
    from deltalake import DeltaTable

SHARD_PREFIX = "feature_store_online_"
_WRITE_ROLES = {"developer", "admin"}


def _reconstructed() -> bool:
    """Whether this process is a restarted actor (False outside an actor)."""
    try:
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not in an actor (unit tests build the class directly)
        return False


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
        # Every RPC verifies its caller's credential here (never a claimed name or role).
        self._auth = Authenticator.from_config(self.config)
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
        # Loaded on first use: a store without sensitive data never creates a key file.
        self._tokenizer_obj: Tokenizer | None = None
        self._key_tokens: dict[str, list[int]] = {}  # view -> positions of sensitive keys
        self._rebuilt_at = time.time()
        # After a restart, writes wait out the leases the previous instance granted.
        self._changes = ChangeLog(
            lease_s=self.config.feature_store.near_cache.lease_s,
            grace=_reconstructed(),
        )
        if self.serves_online:
            for name in self._registry.names("feature_view"):
                if self._registry.view(name).online:
                    self._rebuild_online(name)
        self._rebuilt_at = time.time()

    # -- helpers --------------------------------------------------------------------------------

    def _who(self, credential: dict[str, Any] | None) -> Principal:
        """The verified caller (AuthenticationError when the credential proves nothing)."""
        return self._auth.authenticate(credential)

    def _require_write(self, credential: dict[str, Any] | None, action: str) -> Principal:
        p = self._who(credential)
        if not _WRITE_ROLES & set(p.roles):
            raise PermissionDeniedError(
                f"principal {p.name!r} may not {action} (rule: role developer or admin)",
                principal=p.name,
                action=action,
                required_role="developer",
            )
        return p

    def _check_tenant(self, view: str, p: Principal) -> None:
        if "admin" in p.roles:
            return
        for kind in ("feature_view", "on_demand_feature_view"):
            if view in self._registry.names(kind):
                tenant = self._registry.record(kind, view)["tenant"]
                if tenant != p.tenant:
                    raise PermissionDeniedError(
                        f"view {view!r} belongs to tenant {tenant!r}, not {p.tenant!r} "
                        "(rule: a tenant's views are used only by that tenant or an admin)",
                        principal=p.name,
                        action="read",
                        view=view,
                        owner_tenant=tenant,
                        rule="tenant-owned",
                    )

    def _sees(self, view: str, p: Principal) -> bool:
        try:
            self._check_tenant(view, p)
        except PermissionDeniedError:
            return False
        return True

    def _tokenizer(self) -> Tokenizer:
        if self._tokenizer_obj is None:
            self._tokenizer_obj = Tokenizer.from_config(self.config)
        return self._tokenizer_obj

    def _tokenize(self, view: str, table: pa.Table) -> pa.Table:
        """Sensitive columns of ``table`` as tokens (tokens already there stay as they are)."""
        cols = self._registry.sensitive_columns(view)
        return self._tokenizer().tokenize_table(table, cols) if cols else table

    def _sensitive_positions(self, view: str) -> list[int]:
        """Positions, among the view's join keys, of the keys stored as tokens."""
        pos = self._key_tokens.get(view)
        if pos is None:
            keys = [k for k, _ in self._registry.key_columns(view)]
            sens = set(self._registry.sensitive_keys(view))
            pos = self._key_tokens[view] = [i for i, k in enumerate(keys) if k in sens]
        return pos

    def _lookup_keys(self, view: str, keys: list[Any]) -> list[Any]:
        """Key values as stored: raw values of sensitive keys become their tokens, so a caller
        may look up by the raw value (the SDK and the gateway send tokens already)."""
        pos = self._sensitive_positions(view)
        if not pos:
            return keys
        tok = self._tokenizer()
        if len(self._registry.key_columns(view)) == 1:
            return tok.tokens(keys)
        out = []
        for row in keys:
            vals = list(row)
            for i in pos:
                vals[i] = tok.token(vals[i])
            out.append(tuple(vals))
        return out

    @property
    def _max_future_skew(self) -> timedelta:
        return self.config.feature_store.max_future_skew

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
        self._key_tokens = {}
        # New definitions (types, TTLs, rebuilt tables): near-caches drop everything.
        self._changes.record(None, None)
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

    def definitions(
        self, credential: dict[str, Any] | None, known_serial: int | None = None
    ) -> dict[str, Any] | None:
        """The registry as plain data, or None if the caller's ``known_serial`` is current."""
        self._who(credential)
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
                    self._check_tenant(fv.name, p)
            tables = {
                fv.name: offline.table_columns(self.storage, fv.name) for fv in parsed.feature_views
            }
            plan = self._registry.plan_apply(
                parsed,
                force=force,
                applied_by=p.name,
                tenant=p.tenant,
                admin="admin" in p.roles,
                table_schemas=tables,
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
        if plan.changed:
            self._changes.await_acks(self._changes.seq)
        return {"serial": self._registry.serial, "changes": [c.summary() for c in plan.changes]}

    # -- offline writes -------------------------------------------------------------------------

    def reserve_seq(self, credential: dict[str, Any] | None, n: int) -> int:
        """Hand out ``n`` ingestion sequence numbers; returns the first."""
        self._require_write(credential, "ingest")
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
        self._check_tenant(view, p)
        fv = self._registry.view(view)  # NotFoundError for an unknown view
        for f in files:
            path = str(f.get("path", ""))
            if "/" in path or not path.startswith("part-") or not path.endswith(".parquet"):
                raise ValidationError(
                    f"data file {path!r} is not an ingestion file of {view!r}",
                    field="files",
                    value=path,
                    rule="part-*.parquet",
                )
            self._check_file_times(view, fv.timestamp_field, f)
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

    def _check_file_times(self, view: str, ts_field: str, f: dict[str, Any]) -> None:
        """The ingestion pipeline refuses future rows before writing; its file statistics are
        checked here too, so a client that skipped the check cannot commit them either."""
        try:
            newest = json.loads(f.get("stats") or "{}").get("maxValues", {}).get(ts_field)
            when = datetime.fromisoformat(str(newest).replace("Z", "+00:00")) if newest else None
        except (TypeError, ValueError, AttributeError):
            when = None
        if when is None:
            raise ValidationError(
                f"data file {f.get('path')!r} of {view!r} has no max {ts_field!r} statistic "
                "(rule: ingestion files carry min/max event-time stats)",
                field="files",
                value=str(f.get("path")),
                rule="event-time stats",
            )
        # The stats are rounded up to the millisecond: allow that much.
        limit = datetime.now(UTC) + self._max_future_skew + timedelta(milliseconds=1)
        if when > limit:
            raise ValidationError(
                f"view {view!r}: data file {f.get('path')!r} holds {ts_field!r} {when.isoformat()}"
                f", in the future (rule: event times at most feature_store.max_future_skew = "
                f"{self._max_future_skew} ahead of the clock)",
                field=ts_field,
                value=when.isoformat(),
                rule="event time <= now + max_future_skew",
                view=view,
            )

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
        self._check_tenant(view, p)
        fv = self._registry.view(view)
        keys = self._registry.key_columns(fv)
        if isinstance(data, dict):
            data = pa.table(data)
        # Refused before anything is written: the store stays exactly as it was.
        table = conform(data, fv, keys, max_future_skew=self._max_future_skew)
        if table.num_rows == 0:
            return {"version": None, "rows": 0}
        table = self._tokenize(view, table)  # raw sensitive values never reach Delta
        with self._lock:
            group = self._groups.get(view)
            if group is None:
                group = self._groups[view] = _GroupCommit(
                    lambda tables, v=view, who=p.name: self._commit_push(v, tables, who)
                )
        version, change = group.submit(table)
        if change:  # acknowledged once no near-cache can answer the old rows
            self._changes.await_acks(change)
        return {"version": version, "rows": table.num_rows}

    def _commit_push(self, view: str, tables: list[pa.Table], who: str) -> tuple[int, int]:
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
        change = 0
        if online is not None:
            online.upsert(table)
            change = self._changes.record(view, online.key_list(table))
        return version, change

    def table_versions(
        self, credential: dict[str, Any] | None, views: list[str] | None = None
    ) -> dict[str, int | None]:
        """``{view: current Delta version}`` (None for a view without a table)."""
        p = self._who(credential)
        names = views if views is not None else self._registry.names("feature_view")
        out = {}
        for name in names:
            self._registry.view(name)
            self._check_tenant(name, p)
            dt = offline.open_table(self.storage, name)
            out[name] = dt.version() if dt is not None else None
        return out

    def compact(self, view: str, principal: dict[str, Any] | None = None) -> dict[str, Any]:
        """Merge small files of a view's table and write a checkpoint (keeps recovery fast)."""
        p = self._require_write(principal, "compact")
        self._registry.view(view)
        self._check_tenant(view, p)
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
        credential: dict[str, Any] | None,
        key_sets: list[list[Any]],
        requests: list[tuple[str, list[str], int]],
        serial: int | None = None,
        now_us: int | None = None,
        with_ts: bool = False,
    ) -> dict[str, Any]:
        """One batch lookup: ``requests`` are ``(view, features, index into key_sets)``.

        Returns ``{"serial": registry serial, "views": {view: (statuses, {feature: values})},
        "change": (epoch, seq)}`` with statuses as a bytes string (0 present, 1 not_found,
        2 expired); ``with_ts`` adds each row's event time (µs, int64 bytes) to every view's
        tuple. ``change`` is the change log's position before the read: a near-cache keeps
        the answer only if it has applied no later change of the view.
        """
        tag = (self._changes.epoch, self._changes.seq)  # before the read (see ChangeLog)
        p = self._who(credential)
        self._sync(serial)
        if not self.serves_online:
            raise ValidationError(
                f"this feature store keeps its online store in shards ({SHARD_PREFIX}*)",
                field="online_shards",
                value=self.num_shards,
                rule="call the shards",
            )
        now = now_us if now_us is not None else time.time_ns() // 1000
        out: dict[str, tuple[Any, ...]] = {}
        for view, features, ks in requests:
            self._check_tenant(view, p)
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
            keys = self._lookup_keys(view, key_sets[ks])
            if with_ts:
                status, values, ts = table.read_with_ts(keys, features, now)
                out[view] = (status.tobytes(), values, ts.tobytes())
            else:
                status, values = table.read(keys, features, now)
                out[view] = (status.tobytes(), values)
        return {"serial": self._registry.serial, "views": out, "change": tag}

    def online_read_packed(self, credential: dict[str, Any] | None, blob: bytes) -> bytes:
        """:meth:`online_read` with arguments and reply pickled by the caller and here.

        The hot path of serving: Ray serialises one ``bytes`` object much faster than nested
        lists and dicts (measured ~0.15 ms less per call), and both ends are this codebase.
        """
        key_sets, requests, serial, *opts = pickle.loads(blob)
        with_ts = bool(opts and opts[0])
        return pickle.dumps(
            self.online_read(credential, key_sets, requests, serial, with_ts=with_ts), protocol=5
        )

    def online_watch(
        self,
        credential: dict[str, Any] | None,
        sub_id: str,
        epoch: str | None,
        since: int,
        wait_s: float,
    ) -> dict[str, Any]:
        """A near-cache's long poll on the online changes (see :meth:`ChangeLog.watch`)."""
        self._who(credential)
        return self._changes.watch(sub_id, epoch, int(since), float(wait_s))

    def online_unwatch(self, credential: dict[str, Any] | None, sub_id: str) -> None:
        """A near-cache going away: writes stop waiting for it."""
        self._who(credential)
        self._changes.forget(sub_id)

    def online_upsert(
        self,
        credential: dict[str, Any] | None,
        view: str,
        data: pa.Table,
        serial: int | None = None,
    ) -> int:
        """Merge rows (with ``_seq``) into the online store (materialisation)."""
        p = self._require_write(credential, "materialize")
        self._sync(serial)
        self._check_tenant(view, p)
        table = self._online.get(view)
        if table is None:
            fv = self._registry.view(view)
            if not fv.online or not self.serves_online:
                return 0
            table = self._online[view] = self._new_online_table(view)
        keys = [k for k, _ in table.keys]
        # Rows come from the Delta table (tokens already); tokenizing again is a no-op there
        # and keeps raw values out of the online store whatever a caller sends.
        mine = self._mine(self._tokenize(view, data), keys)
        changed = table.upsert(mine)
        if changed:
            self._changes.await_acks(self._changes.record(view, table.key_list(mine)))
        return changed

    def materialization_state(self, credential: dict[str, Any] | None, view: str) -> dict[str, Any]:
        """The table version the online store has caught up with (None: never)."""
        p = self._who(credential)
        fv = self._registry.view(view)
        self._check_tenant(view, p)
        return {"view": view, "online": fv.online, "version": self._materialized.get(view)}

    def set_materialized(self, credential: dict[str, Any] | None, view: str, version: int) -> None:
        p = self._require_write(credential, "materialize")
        self._registry.view(view)
        self._check_tenant(view, p)
        prev = self._materialized.get(view)
        self._materialized[view] = version if prev is None else max(prev, version)

    def online_stats(self, credential: dict[str, Any] | None) -> dict[str, Any]:
        p = self._who(credential)
        return {
            "instance": self.instance_name,
            "shard": self.shard,
            "rebuilt_at": self._rebuilt_at,
            "views": {n: len(t) for n, t in self._online.items() if self._sees(n, p)},
            "status_names": list(STATUS_NAMES),
            "change_seq": self._changes.seq,
            "near_caches": self._changes.subscribers(),
        }

    # -- catalog --------------------------------------------------------------------------------

    def list_views(self, principal: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One summary row per feature view and on-demand view the principal may see."""
        p = self._who(principal)
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
        self._check_tenant(view, self._who(principal))
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
