"""The platform as seen from inside a Serve replica: the published config, the service principal
the application acts as (never an HTTP caller's identity), and the few platform services the
replicas use — built from the actor-access helpers of ``raymlp._private``, not from the SDK
(``raymlp.client`` sits above serving)."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from raymlp._private.online_lookup import OnlineLookup
from raymlp._private.prediction_logger import PredictionLogger
from raymlp._private.principals import service_principal
from raymlp._private.registry_reader import RegistryReader
from raymlp._private.rpc import ActorClient, RegistryRPC, published_config
from raymlp.config import PlatformConfig, Principal
from raymlp.errors import UnavailableError

__all__ = [
    "service_platform",
    "ReplicaServices",
    "ReplicaMonitor",
]


class ReplicaMonitor:
    """The monitor as the gateway uses it: a prediction logger shipping to the actor."""

    def __init__(self, actor: ActorClient) -> None:
        self._actor = actor

    def logger(self, *, capacity: int, flush_interval_s: float) -> PredictionLogger:
        """A started :class:`PredictionLogger` (source ``gateway``) shipping to the monitor."""
        return PredictionLogger(
            self._actor, source="gateway", capacity=capacity, flush_interval_s=flush_interval_s
        )


class ReplicaServices:
    """What a Serve replica reaches on the platform, acting as the service ``principal``:
    ``registry`` (get / get_traffic / subscribe), ``features`` (online lookups) and ``monitor``
    (the prediction logger)."""

    def __init__(self, config: PlatformConfig, principal: Principal) -> None:
        self.config = config
        self.principal = principal

    def actor(self, name: str) -> ActorClient:
        """A client on the named platform actor."""
        return ActorClient(name, self.config.ray.namespace)

    @cached_property
    def registry(self) -> RegistryReader:
        return RegistryReader(RegistryRPC(self.actor("registry"), self.principal))

    @cached_property
    def features(self) -> OnlineLookup:
        return OnlineLookup.from_config(self.config, self.principal)

    @cached_property
    def monitor(self) -> ReplicaMonitor:
        return ReplicaMonitor(self.actor("monitor"))


def service_platform(
    principal: str | None = None,
    config: PlatformConfig | dict[str, Any] | None = None,
    wait_s: float = 30.0,
) -> ReplicaServices:
    """The :class:`ReplicaServices` of a replica (Ray is already initialised there): ``config``
    as given by the deployer, else the one ``raymlp up`` published on the cluster (waited for
    up to ``wait_s``: a replica may start while the platform comes up)."""
    if isinstance(config, dict):
        config = PlatformConfig.model_validate(config)
    if config is None:
        deadline = time.monotonic() + wait_s
        while (config := published_config()) is None:
            if time.monotonic() > deadline:
                raise UnavailableError(
                    "the raymlp platform is not up on this cluster (run `raymlp up`)"
                )
            time.sleep(0.5)
    return ReplicaServices(config, service_principal(config, principal))
