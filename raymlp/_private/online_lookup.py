"""The online-feature read path: plan, call the online store (one actor call per shard), assemble.

Shared by ``p.features.get_online_features`` and the Serve model servers (through the
replica-side services of ``raymlp.serving._platform``). Plans are cached per feature list and
rebuilt when the feature store reports new definitions; the definitions are read from the
``feature_store`` actor, and the principal's tenant is checked once per plan.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import Any

from raymlp._private.credentials import Caller
from raymlp._private.rpc import ActorClient, call
from raymlp.config import PlatformConfig
from raymlp.errors import NotFoundError, PermissionDeniedError
from raymlp.features import lookup
from raymlp.features.definitions import FeatureRegistry, Kind
from raymlp.features.lookup import OnlinePlan

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

    Example::

        online = OnlineLookup.from_config(cfg, caller)
        online.get_online_features([{"customer_id": "c1"}], ["customer_profile:tenure_months"])
    """

    def __init__(self, main: ActorClient, shards: list[ActorClient], caller: Caller) -> None:
        self.main = main
        self.shards = shards
        self.caller = caller
        self.principal = caller.principal
        self._reg: FeatureRegistry | None = None
        self._plans: dict[tuple[str, ...], OnlinePlan] = {}

    @classmethod
    def from_config(cls, config: PlatformConfig, caller: Caller) -> OnlineLookup:
        """The lookup on the feature store actors of the platform ``config`` describes."""
        ns = config.ray.namespace
        n = config.feature_store.online_shards
        shards = [ActorClient(SHARD_NAME.format(i), ns) for i in range(n)] if n > 1 else []
        return cls(ActorClient("feature_store", ns), shards, caller)

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
        plan = self._plans.get(key)
        if plan is None:
            reg = self.cached_registry(lambda r: r.plan_retrieval(list(key)))
            plan = OnlinePlan(reg, key)
            self.check_read(reg, [*plan.views, *(o.name for o, _ in plan.plan.on_demand)])
            self._plans[key] = plan
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
