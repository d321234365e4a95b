"""``p.features``: the feature store from any driver, job, CLI or Serve replica.

Heavy work runs here, on the caller's side, as Ray Data pipelines and Ray tasks (ingestion,
point-in-time joins, materialisation reads); the ``feature_store`` actor keeps definitions,
commits and the online store. Example::

    p = raymlp.connect()
    p.features.apply("configs/features/churn.yaml")
    p.features.ingest("customer_profile", "data/profiles.parquet")
    versions = p.features.table_versions()                       # pin for reproducibility
    ds = p.features.get_historical_features(entities, ["customer_profile:tenure_months"],
                                            as_of_versions=versions)
    ds.feature_versions                                          # {'customer_profile': 3}
    p.features.materialize("customer_profile")
    p.features.get_online_features([{"customer_id": "c1"}], ["customer_profile:tenure_months"])
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa

from raymlp import _constants
from raymlp._private.online_lookup import OnlineLookup
from raymlp._private.rpc import call
from raymlp.config import (
    Entity,
    FeatureRepo,
    FeatureView,
    OnDemandFeatureView,
    load_config,
    load_config_file,
)
from raymlp.errors import (
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    SchemaError,
    UnavailableError,
    ValidationError,
)
from raymlp.features import offline, pit
from raymlp.features.definitions import FeatureRegistry
from raymlp.features.dtypes import arrow_type
from raymlp.features.hashing import hash_keys
from raymlp.features.ingest import ingest as run_ingest
from raymlp.features.ingest import to_dataset
from raymlp.features.materialize import submit_latest, window_filter
from raymlp.features.ondemand import load_udf
from raymlp.features.tokenize import Tokenizer

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from raymlp.client import Platform

__all__ = ["FeaturesClient"]


def _utc(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise BadRequestError(
                f"{what} {value!r} is not an ISO-8601 time", field=what, value=value
            ) from None
    if not isinstance(value, datetime):
        raise BadRequestError(f"{what} {value!r} is not a datetime", field=what, value=str(value))
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # naive means UTC


def _rows_to_table(rows: Any) -> pa.Table:
    try:
        return _as_table(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        # e.g. a 400-digit integer: a bad request naming the column, not an internal error.
        column = _bad_column(rows)
        raise ValidationError(
            f"rows cannot be read as a table: column {column!r}: {e} (rule: values of one "
            "type per column, numbers within the range of their dtype)",
            field=column or "rows",
            value=type(rows).__name__,
            rule="typed values",
        ) from None


def _bad_column(rows: Any) -> str | None:
    """The first column that cannot become an Arrow array (None if it cannot be told)."""
    if isinstance(rows, Mapping):
        columns = {str(k): list(v) for k, v in rows.items()}
    elif isinstance(rows, list) and all(isinstance(r, Mapping) for r in rows):
        names = list(dict.fromkeys(k for r in rows for k in r))
        columns = {str(k): [r.get(k) for r in rows] for k in names}
    else:
        return None
    for name, values in columns.items():
        try:
            pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return name
    return None


def _as_table(rows: Any) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, Mapping):
        return pa.table(dict(rows))
    try:
        import pandas as pd

        if isinstance(rows, pd.DataFrame):
            return pa.Table.from_pandas(rows, preserve_index=False)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(rows, Iterable):
        rows = list(rows)
        if rows and all(isinstance(r, Mapping) for r in rows):
            return pa.Table.from_pylist(rows)
    raise BadRequestError(
        "rows must be a list of dicts, a dict of columns, a pyarrow Table or a pandas DataFrame",
        field="rows",
        value=type(rows).__name__,
    )


class FeaturesClient:
    """The feature store SDK (obtained as ``platform.features``)."""

    def __init__(self, platform: Platform) -> None:
        self._p = platform
        self._online = OnlineLookup.from_config(platform.config, platform.caller)
        self._main = self._online.main
        self._shards = self._online.shards
        self._tokenizer_obj: Tokenizer | None = None

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def _principal(self) -> dict[str, Any]:
        return self._p.caller.wire()

    def registry(self, refresh: bool = True) -> FeatureRegistry:
        """The definitions in force (refreshed from the actor unless ``refresh=False``)."""
        return self._online.registry(refresh)

    def _tokenizer(self) -> Tokenizer:
        """The platform's tokenizer (loaded when sensitive data is first written or read)."""
        if self._tokenizer_obj is None:
            self._tokenizer_obj = Tokenizer.from_config(self._p.config)
        return self._tokenizer_obj

    def _cached_registry(self, probe: Any) -> FeatureRegistry:
        """The cached registry if ``probe(registry)`` finds what it needs, else a fresh one
        (a view applied by another client since we cached it)."""
        return self._online.cached_registry(probe)

    def _check_read(self, reg: FeatureRegistry, views: Iterable[str]) -> None:
        self._online.check_read(reg, views)

    @staticmethod
    def _retry_unavailable(fn: Any, deadline_s: float | None = None) -> Any:
        """Retry while the actor restarts (calls are idempotent or at-least-once safe)."""
        deadline = time.monotonic() + (deadline_s or _constants.actor_call_timeout_s())
        delay = 0.05
        while True:
            try:
                return fn()
            except UnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- definitions ----------------------------------------------------------------------------

    def apply(self, file_or_objects: Any, force: bool = False) -> list[dict[str, Any]]:
        """Apply definitions from a YAML file, a :class:`FeatureRepo`, a dict, or objects.

        Re-applying a changed view records a new definition version; incompatible changes
        (join keys, timestamp field, feature dtypes) raise ConflictError unless ``force``.
        Returns one row per object: ``kind``, ``name``, ``action``, ``version``, ``detail``.

        Example::

            p.features.apply("configs/features/churn.yaml")
            p.features.apply([Entity(name="customer", join_keys=["customer_id"]), view])
        """
        repo = self._to_repo(file_or_objects)
        for od in repo.on_demand_feature_views:
            load_udf(od.udf)  # an unimportable function is refused before anything is stored
        result = self._main.call(
            "apply", repo.model_dump(mode="json", by_alias=True), force, self._principal
        )
        self.registry()
        return result["changes"]

    @staticmethod
    def _to_repo(obj: Any) -> FeatureRepo:
        if isinstance(obj, FeatureRepo):
            return obj
        if isinstance(obj, (str, os.PathLike)):
            return load_config_file(FeatureRepo, obj)
        if isinstance(obj, Mapping):
            return load_config(FeatureRepo, dict(obj), "<features>")
        items = [obj] if isinstance(obj, (Entity, FeatureView, OnDemandFeatureView)) else list(obj)
        repo = FeatureRepo()
        for it in items:
            if isinstance(it, Entity):
                repo.entities.append(it)
            elif isinstance(it, FeatureView):
                repo.feature_views.append(it)
            elif isinstance(it, OnDemandFeatureView):
                repo.on_demand_feature_views.append(it)
            else:
                raise BadRequestError(
                    f"cannot apply a {type(it).__name__} (rule: Entity, "
                    "FeatureView, OnDemandFeatureView, a FeatureRepo or a "
                    "YAML path)",
                    field="objects",
                    value=type(it).__name__,
                )
        return FeatureRepo.model_validate(repo.model_dump(by_alias=True))  # re-run checks

    def list_views(self) -> list[dict[str, Any]]:
        """Feature views and on-demand views the principal may see (one summary dict each)."""
        return self._main.call("list_views", self._principal)

    def describe(self, view: str) -> dict[str, Any]:
        """Schema, owner, description, tags, history, table versions, row counts, freshness,
        online state and (when the registry runs) the models using the view."""
        out = self._main.call("describe", view, self._principal)
        out["models"] = self._models_using(view)
        if self._shards and out.get("kind") == "feature_view":
            stats = [s.call("online_stats", self._principal) for s in self._shards]
            out["online"]["entities"] = sum(s["views"].get(view, 0) for s in stats)
        return out

    def _models_using(self, view: str) -> list[dict[str, Any]] | None:
        try:
            registry = self._p.registry
            return registry.models_using_view(view)
        except (NotFoundError, UnavailableError, AttributeError, ImportError):
            return None  # no registry actor (yet): unknown, not "none"

    def table_versions(self, views: list[str] | None = None) -> dict[str, int | None]:
        """``{view: current Delta version}``; pass it as ``as_of_versions`` to pin a training
        set to exactly these table versions."""
        return self._main.call("table_versions", self._principal, views)

    def compact(self, view: str) -> dict[str, Any]:
        """Merge the small files of a view's table and checkpoint its log."""
        return self._main.call("compact", view, self._principal)

    # -- writes ---------------------------------------------------------------------------------

    def ingest(self, view: str, data: Any) -> int:
        """Validate ``data`` against the view and append it in one Delta commit.

        ``data``: a Parquet/CSV path or URI, a pyarrow Table, a pandas DataFrame or a
        ``ray.data.Dataset``. Returns the new table version. Schema problems raise SchemaError
        naming the view, column and rule, and nothing is written.
        """
        reg = self.registry()
        fv = reg.view(view)
        self._check_read(reg, [view])
        who = self._p.principal
        if not {"developer", "admin"} & set(who.roles):  # refuse before writing any file
            raise PermissionDeniedError(
                f"principal {who.name!r} may not ingest (rule: role developer or admin)",
                principal=who.name,
                action="ingest",
                required_role="developer",
            )
        main, principal = self._main, self._principal
        handle = main.handle

        def reserve(n: int) -> int:
            import ray

            return ray.get(handle.reserve_seq.remote(principal, n))

        def commit(files: list[dict[str, Any]], txn_id: str) -> int:
            # Idempotent per txn_id, so retrying across an actor restart is safe.
            return self._retry_unavailable(
                lambda: main.call("commit_files", view, files, txn_id, principal)
            )

        sensitive = reg.sensitive_columns(fv)
        version, _ = run_ingest(
            to_dataset(data),
            fv,
            reg.key_columns(fv),
            self._p.storage,
            reserve_seq=reserve,
            commit=commit,
            txn_id=f"ingest-{uuid.uuid4().hex}",
            max_future_skew=self._p.config.feature_store.max_future_skew,
            tokenizer=self._tokenizer() if sensitive else None,
            sensitive=sensitive,
        )
        if version < 0:  # nothing to write
            # an applied view always has its table (apply creates it before the definition)
            return cast(int, self.table_versions([view])[view])
        return version

    def push(self, view: str, rows: Any) -> int:
        """Streaming ingestion: append rows to the offline table, then update the online store.

        Returns the Delta version that holds the rows once they are durable. While the actor
        restarts the call is retried (at-least-once: a retried push may be stored twice, which
        reads the same because the newest row per entity wins).
        """
        table = _rows_to_table(rows)
        reg = self._cached_registry(lambda r: r.view(view))
        if self._shards:
            fv = reg.view(view)
            keys = [k for k, _ in reg.key_columns(fv)]
            missing = [k for k in keys if k not in table.column_names]
            if missing:
                raise SchemaError(
                    f"view {view!r}: join key column {missing[0]!r} is missing",
                    view=view,
                    column=missing[0],
                    rule="missing column",
                )
            sens = reg.sensitive_keys(fv)
            if sens:  # shards hold entities by the hash of the stored key: the token
                table = self._tokenizer().tokenize_table(table, sens)
            shard = hash_keys([table.column(k) for k in keys]) % np.uint64(len(self._shards))
            refs = []
            for i, actor in enumerate(self._shards):
                part = table.filter(pa.array(shard == np.uint64(i)))
                if part.num_rows:
                    refs.append((actor, part))
            results = [
                self._retry_unavailable(
                    lambda a=a, t=t: a.call("push", view, t, self._principal, reg.serial)
                )
                for a, t in refs
            ]
            versions = [r["version"] for r in results if r["version"] is not None]
            # an applied view always has its table (apply creates it before the definition)
            return max(versions) if versions else cast(int, self.table_versions([view])[view])
        result = self._retry_unavailable(
            lambda: self._main.call("push", view, table, self._principal, reg.serial)
        )
        return result["version"]

    def materialize(
        self, view: str | None = None, start: Any = None, end: Any = None, *, full: bool = False
    ) -> list[dict[str, Any]]:
        """Load what changed since the last materialisation into the online store.

        Reads only the Delta files added since the version the online store has caught up
        with (``full=True``: every file), keeps rows with ``start <= event time <= end`` when
        given, and upserts the newest row per entity (newer rows never get overwritten by
        older ones). ``view=None`` materialises every online view. Returns one summary per view.
        """
        reg = self.registry()
        names = [view] if view else [n for n in reg.names("feature_view") if reg.view(n).online]
        start, end = _utc(start, "start"), _utc(end, "end")
        out = []
        targets = self._shards or [self._main]
        for name in names:
            fv = reg.view(name)
            if not fv.online:
                raise ValidationError(
                    f"view {name!r} is not online (rule: online: true)",
                    field="view",
                    value=name,
                    rule="online view",
                )
            state = self._main.call("materialization_state", self._principal, name)
            since = None if full else state["version"]
            version, files = offline.files_since(self._p.storage, name, since)
            # the table exists at ``version``: files_since just read it there
            dt = cast("DeltaTable", offline.open_table(self._p.storage, name, version))
            schema = pa.schema(dt.schema().to_arrow())
            keys = [k for k, _ in reg.key_columns(fv)]
            cols = [
                *keys,
                fv.timestamp_field,
                "_seq",
                *(f.name for f in fv.features if f.name in schema.names),
            ]
            groups = submit_latest(
                self._p.storage,
                files,
                schema,
                keys,
                fv.timestamp_field,
                cols,
                window_filter(fv.timestamp_field, start, end),
                shards=len(targets),
            )
            upserts = [
                t.remote("online_upsert", self._principal, name, refs[i], reg.serial)
                for refs in groups
                for i, t in enumerate(targets)
            ]
            rows = sum(call(upserts, timeout=600, actor="feature_store")) if upserts else 0
            self._main.call("set_materialized", self._principal, name, version)
            out.append(
                {
                    "view": name,
                    "from_version": since,
                    "to_version": version,
                    "files": len(files),
                    "rows_upserted": int(rows),
                }
            )
        return out

    # -- reads ----------------------------------------------------------------------------------

    def get_online_features(
        self, entity_rows: Any, features: list[str], *, format: str = "rows"
    ) -> Any:
        """Latest feature values for entity rows, from the online store, in one actor call.

        ``entity_rows``: a list of dicts (join keys plus any request fields of on-demand
        views) or a dict of columns. Returns one dict per row: the join keys, one value per
        feature named ``view__feature`` and ``"_status"``: ``{column: "present" | "not_found" |
        "expired"}`` (a read-only dict); values not present are None (TTL is enforced at read
        time).
        ``format="columns"`` returns ``{"columns": {name: [values]}, "status": {name: [...]}}``.

        Example::

            p.features.get_online_features([{"customer_id": "c1"}],
                                           ["customer_profile:tenure_months"])
            # [{'customer_id': 'c1', 'customer_profile__tenure_months': 12,
            #   '_status': {'customer_profile__tenure_months': 'present'}}]
        """
        return self._online.get_online_features(entity_rows, features, format=format)

    def get_historical_features(
        self,
        entity_data: Any,
        features: list[str],
        as_of_versions: dict[str, int] | None = None,
        *,
        timestamp_field: str = "event_timestamp",
        num_partitions: int | None = None,
    ) -> Any:
        """A point-in-time correct training set as a ``ray.data.Dataset``.

        For each entity row (join keys, ``timestamp_field``, request fields, and any other
        columns such as labels, carried through), each feature ``view:feature`` becomes a
        column ``view__feature`` holding the value of the newest feature row with the same
        keys and ``entity_ts - ttl < feature_ts <= entity_ts`` (ties: the row written last);
        no match -> null, and every entity row is returned.

        ``as_of_versions={view: delta_version}`` reads those table versions (time travel);
        the result's ``feature_versions`` attribute records the version read of each view
        (also :meth:`versions_of`). Row order is not the input order.

        Example::

            ds = p.features.get_historical_features(
                entity_df, ["customer_profile:tenure_months", "customer_usage:calls_last_30d"],
                as_of_versions=p.features.table_versions())
        """
        reg = self.registry()
        plan = reg.plan_retrieval(list(features))
        self._check_read(reg, [*plan.views, *(o.name for o, _ in plan.on_demand)])
        for odfv, _ in plan.on_demand:
            load_udf(odfv.udf)
        pins = dict(as_of_versions or {})
        scans: dict[str, pit.ViewScan] = {}
        for view, feats in plan.views.items():
            fv = reg.view(view)
            version, files = offline.data_files(self._p.storage, view, pins.get(view))
            # the table exists at ``version``: data_files just read it there (or raised)
            dt = cast("DeltaTable", offline.open_table(self._p.storage, view, version))
            schema = pa.schema(dt.schema().to_arrow())
            for f in fv.features:  # a feature newer than the pinned version reads as null
                if f.name in feats and f.name not in schema.names:
                    schema = schema.append(pa.field(f.name, arrow_type(f.dtype)))
            scans[view] = pit.ViewScan(
                view=view,
                version=version,
                files=files,
                schema=schema,
                keys=reg.key_columns(fv),
                ts_field=fv.timestamp_field,
                features=feats,
                ttl_us=int(fv.ttl.total_seconds() * 1e6),
            )
        ds = pit.historical_features(
            to_dataset(entity_data),
            reg,
            plan,
            scans,
            self._p.storage,
            timestamp_field=timestamp_field,
            num_partitions=num_partitions,
            tokenizer=self._tokenizer() if pit.sensitive_entity_keys(reg, plan) else None,
        )
        ds.feature_versions = {v: s.version for v, s in scans.items()}
        return ds

    @staticmethod
    def versions_of(ds: Any) -> dict[str, int]:
        """The ``{view: Delta version}`` a dataset from :meth:`get_historical_features` read."""
        versions = getattr(ds, "feature_versions", None)
        if versions is None:
            raise NotFoundError(
                "this dataset does not come from get_historical_features "
                "(or was transformed since)",
                kind="feature_versions",
                name=type(ds).__name__,
            )
        return dict(versions)
