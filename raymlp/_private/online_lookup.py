"""The online-feature read path: plan, call the online store (one actor call per shard), assemble.

Shared by ``p.features.get_online_features`` and the Serve model servers (through the
replica-side services of ``raymlp.serving._platform``). Plans are cached per feature list and
rebuilt when the feature store reports new definitions; the definitions are read from the
``feature_store`` actor, and the principal's tenant is checked once per plan. With a
:class:`~raymlp._private.online_cache.NearCache` (the replicas', ``feature_store.near_cache``)
the rows it holds answer without an actor call, and only the missed keys are read (with their
event times, so the cache can expire them by itself).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from raymlp._private.credentials import Caller
from raymlp._private.rpc import ActorClient, call
from raymlp.config import PlatformConfig
from raymlp.errors import NotFoundError, PermissionDeniedError
from raymlp.features import lookup
from raymlp.features.definitions import FeatureRegistry, Kind
from raymlp.features.lookup import OnlinePlan
from raymlp.features.online import NOT_FOUND

if TYPE_CHECKING:
    from raymlp._private.online_cache import NearCache

__all__ = ["OnlineLookup", "SHARD_NAME"]

#: Actor name of online shard ``i`` (when ``feature_store.online_shards`` > 1).
SHARD_NAME = "feature_store_online_{}"


def _pack(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=5)


class OnlineLookup:
    """Online feature reads (and the definitions they need) as one principal.

    Args:
        main: the ``feature_store`` actor (definitions; the online store when unsharded).
        shards: the online shard actors (empty when unsharded).
        caller: who reads (its credential goes with every call; tenants are checked here
            and again by the actor).
        cache: a started near-cache following ``main`` and the ``shards`` (in that order).

    Example::

        online = OnlineLookup.from_config(cfg, caller)
        online.get_online_features([{"customer_id": "c1"}], ["customer_profile:tenure_months"])
    """

    def __init__(
        self,
        main: ActorClient,
        shards: list[ActorClient],
        caller: Caller,
        cache: NearCache | None = None,
    ) -> None:
        self.main = main
        self.shards = shards
        self.caller = caller
        self.principal = caller.principal
        self.cache = cache
        self._reg: FeatureRegistry | None = None
        self._plans: dict[tuple[str, ...], OnlinePlan] = {}
        self._generation = cache.generation if cache is not None else 0

    @classmethod
    def from_config(
        cls, config: PlatformConfig, caller: Caller, *, near_cache: bool = False
    ) -> OnlineLookup:
        """The lookup on the feature store actors of the platform ``config`` describes;
        ``near_cache``: with a started :class:`NearCache` if the config enables it."""
        ns = config.ray.namespace
        n = config.feature_store.online_shards
        shards = [ActorClient(SHARD_NAME.format(i), ns) for i in range(n)] if n > 1 else []
        settings = config.feature_store.near_cache
        cache = None
        if near_cache and settings.enabled:
            from raymlp._private.online_cache import NearCache

            stores = [ActorClient("feature_store", ns)]
            stores += [ActorClient(SHARD_NAME.format(i), ns) for i in range(len(shards))]
            cache = NearCache(stores, caller, max_bytes=int(settings.max_mb * (1 << 20))).start()
        return cls(ActorClient("feature_store", ns), shards, caller, cache)

    def close(self) -> None:
        """Stop the near-cache (if any)."""
        if self.cache is not None:
            self.cache.close()

    @property
    def serial(self) -> int | None:
        """The serial of the cached definitions (None before the first read)."""
        return self._reg.serial if self._reg is not None else None

    def registry(self, refresh: bool = True) -> FeatureRegistry:
        """The definitions in force (refreshed from the actor unless ``refresh=False``)."""
        if self._reg is None or refresh:
            data = self.main.call("definitions", self.caller.wire(), self.serial)
            if data is not None:
                self._reg = FeatureRegistry.from_dict(data)
                self._plans.clear()
        if self._reg is None:  # the actor answers "unchanged" only to a caller that has a copy
            raise NotFoundError("the feature store sent no definitions", kind="definitions")
        return self._reg

    def cached_registry(self, probe: Callable[[FeatureRegistry], Any]) -> FeatureRegistry:
        """The cached definitions if ``probe(registry)`` finds what it needs, else fresh ones
        (a view applied by another client since we cached them)."""
        if self._reg is not None:
            try:
                probe(self._reg)
                return self._reg
            except NotFoundError:
                pass
        return self.registry()

    def check_read(self, reg: FeatureRegistry, views: Iterable[str]) -> None:
        """PermissionDeniedError unless the principal may read every view (its tenant's)."""
        p = self.principal
        if "admin" in p.roles:
            return
        for v in views:
            kind: Kind = "feature_view" if reg.has_view(v) else "on_demand_feature_view"
            tenant = reg.record(kind, v)["tenant"]
            if tenant != p.tenant:
                raise PermissionDeniedError(
                    f"view {v!r} belongs to tenant {tenant!r}, not {p.tenant!r}",
                    principal=p.name,
                    view=v,
                )

    def get_online_features(
        self, entity_rows: Any, features: list[str], *, format: str = "rows"
    ) -> Any:
        """Latest feature values for ``entity_rows`` (see
        :meth:`raymlp.client.FeaturesClient.get_online_features` for the result's shape)."""
        key = tuple(features)
        cache = self.cache
        if cache is not None and cache.generation != self._generation:
            # the cache was cleared (new definitions, a resync): plans follow the definitions
            self._generation = cache.generation
            self.registry()
        plan = self._plans.get(key)
        if plan is None:
            reg = self.cached_registry(lambda r: r.plan_retrieval(list(key)))
            plan = OnlinePlan(reg, key)
            self.check_read(reg, [*plan.views, *(o.name for o, _ in plan.plan.on_demand)])
            self._plans[key] = plan
        if cache is not None and not plan.sensitive:
            return self._near(cache, plan, entity_rows, format)
        key_cols, key_sets = lookup.entity_keys(plan, entity_rows)
        serial = self.serial
        cred = self.caller.wire()
        if self.shards:
            parts = lookup.route(plan, key_sets, len(self.shards))
            refs = [
                (idx, a.remote("online_read_packed", cred, _pack((sub, plan.requests, serial))))
                for (idx, sub), a in zip(parts, self.shards)
            ]
            replies = [
                (idx, pickle.loads(call(ref, actor="feature_store_online"))["views"])
                for idx, ref in refs
            ]
            views = lookup.merge(plan, lookup.num_rows(entity_rows), replies)
        else:
            # Pickled here and in the actor: one bytes object crosses Ray (the hot path).
            reply = pickle.loads(
                self.main.call(
                    "online_read_packed", cred, _pack((key_sets, plan.requests, serial))
                )
            )
            if self._reg is not None and reply["serial"] != self._reg.serial:
                self.registry()  # definitions changed: plans are rebuilt on the next call
            views = reply["views"]
        return lookup.assemble(plan, views, key_cols, entity_rows, format)

    # -- through the near-cache ----------------------------------------------------------------

    def _near(self, cache: NearCache, plan: OnlinePlan, entity_rows: Any, format: str) -> Any:
        key_cols, key_sets = lookup.entity_keys(plan, entity_rows)
        if self.shards:  # store 0 is the feature_store actor, shard i is store i + 1
            stores = [(r + 1).tolist() for r in lookup.shard_of(plan, key_sets, len(self.shards))]
        else:
            stores = [[0] * len(ks) for ks in key_sets]
        now_us = time.time_ns() // 1000
        results: dict[str, tuple[np.ndarray, dict[str, list[Any]]]] = {}
        missed: list[set[int]] = [set() for _ in key_sets]
        for view, feats, ks in plan.requests:
            status, values, miss = cache.lookup(
                view, tuple(feats), key_sets[ks], stores[ks], plan.ttl_us[view], now_us
            )
            results[view] = (status, values)
            missed[ks].update(miss)
        if any(missed):
            self._read_missed(cache, plan, key_sets, stores, [sorted(m) for m in missed], results)
        views = {v: (st.tobytes(), vals) for v, (st, vals) in results.items()}
        return lookup.assemble(plan, views, key_cols, entity_rows, format)

    def _read_missed(
        self,
        cache: NearCache,
        plan: OnlinePlan,
        key_sets: list[Any],
        stores: list[list[int]],
        missed: list[list[int]],
        results: dict[str, tuple[np.ndarray, dict[str, list[Any]]]],
    ) -> None:
        """Read the missed keys (one call per store), fill ``results``, keep the answers."""
        generation = cache.generation  # before the reads: a clear meanwhile discards them
        cred, serial = self.caller.wire(), self.serial
        per_store: dict[int, list[list[int]]] = {}
        for ks, positions in enumerate(missed):
            for i in positions:
                per_store.setdefault(stores[ks][i], [[] for _ in key_sets])[ks].append(i)
        refs = []
        for store, pos in per_store.items():
            actor = self.shards[store - 1] if store else self.main
            sub = [[keys[i] for i in p] for keys, p in zip(key_sets, pos)]
            blob = _pack((sub, plan.requests, serial, True))
            refs.append((store, pos, actor.remote("online_read_packed", cred, blob)))
        for store, pos, ref in refs:
            reply = pickle.loads(call(ref, actor="feature_store_online" if store else "feature_store"))
            if not self.shards and self._reg is not None and reply["serial"] != self._reg.serial:
                self.registry()  # definitions changed: plans are rebuilt on the next call
            tag = reply.get("change")
            for view, feats, ks in plan.requests:
                p = pos[ks]
                if not p:
                    continue
                st_bytes, vals, ts_bytes = reply["views"][view]
                st = np.frombuffer(st_bytes, dtype=np.uint8)
                ts = np.frombuffer(ts_bytes, dtype=np.int64).tolist()
                status, values = results[view]
                status[p] = st
                cols = [vals[f] for f in feats]
                for f, col in zip(feats, cols):
                    target = values[f]
                    for j, v in zip(p, col):
                        target[j] = v
                keys = key_sets[ks]
                found = (st != NOT_FOUND).tolist()
                rows = [
                    (keys[i], ts[j] if found[j] else None, tuple(c[j] for c in cols))
                    for j, i in enumerate(p)
                ]
                cache.put(store, view, tuple(feats), tag, generation, rows)
