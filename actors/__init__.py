"""Long-lived, named, detached Ray actors of the platform (namespace ``raymlp``).

Actors are thin: they hold state in memory as a cache of the storage root and expose RPC; the
logic lives in ``raymlp.features``, ``raymlp.registry`` and ``raymlp.monitoring``. Each actor is
described by an :class:`ActorSpec`; ``raymlp up`` creates every spec of :data:`ACTOR_SPECS`,
in start order.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActorSpec", "ACTOR_SPECS"]


@dataclass(frozen=True)
class ActorSpec:
    """How to create one kind of platform actor.

    Attributes:
        name: the Ray actor name (also the key of its settings in PlatformConfig).
        module: import path of the module holding the class.
        cls: the actor class name (a plain class; it is wrapped with ``ray.remote`` here).
        instance_names: given the PlatformConfig, the names of every instance (shards).
        start_order: lower starts first (e.g. the registry before the monitor).
    """

    name: str
    module: str
    cls: str
    start_order: int = 0
    instance_names: Callable[[Any], list[str]] = field(default=lambda cfg: [])

    def names(self, cfg: Any) -> list[str]:
        extra = self.instance_names(cfg)
        return [self.name, *[n for n in extra if n != self.name]]

    def load_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls)


def _online_shard_names(cfg: Any) -> list[str]:
    n = cfg.feature_store.online_shards if cfg is not None else 1
    return [f"feature_store_online_{i}" for i in range(n)] if n > 1 else []


#: Every platform actor, in start order (the registry before the monitor that calls it).
ACTOR_SPECS: tuple[ActorSpec, ...] = (
    ActorSpec("registry", "actors.registry", "RegistryActor", start_order=0),
    ActorSpec(
        "feature_store",
        "actors.feature_store",
        "FeatureStoreActor",
        start_order=1,
        instance_names=_online_shard_names,
    ),
    ActorSpec("monitor", "actors.monitor", "MonitorActor", start_order=2),
)

