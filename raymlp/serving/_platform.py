"""The platform as seen from inside a Serve replica: the platform config (taken from the registry
actor, which got it from `raymlp up`: a driver that rewrites the cluster KV cannot add a principal
here), the service principal the application acts as (never an HTTP caller's identity;
authenticated with platform-signed tokens), and the few platform services the replicas use — built from the actor-access helpers of ``raymlp._private``, not from the SDK
(``raymlp.client`` sits above serving)."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from raymlp import _constants as constants
from raymlp._private.credentials import Caller
from raymlp._private.log_spool import LogSpool
from raymlp._private.online_lookup import OnlineLookup
from raymlp._private.prediction_logger import PredictionLogger
from raymlp._private.principals import service_principal
from raymlp._private.registry_reader import RegistryReader
from raymlp._private.rpc import ActorClient, RegistryRPC
from raymlp.config import PlatformConfig
from raymlp.errors import NotFoundError, UnavailableError

logger = logging.getLogger(__name__)

__all__ = [
    "service_platform",
    "ReplicaServices",
    "ReplicaMonitor",
]


class ReplicaMonitor:
    """The monitor as the gateway uses it: a prediction logger shipping to the actor, each
    shipment authenticated as the application's service ``caller``."""

    def __init__(self, actor: ActorClient, caller: Caller, config: PlatformConfig) -> None:
        self._actor = actor
        self._caller = caller
        self._config = config

    def spool_dir(self, base: str | None = None) -> Path:
        """This platform's spool directory under ``base`` (default ``$RAYMLP_SPOOL_DIR``,
        else ``<tmp>/raymlp-spool-<uid>``): one per storage root and namespace, so two platforms on
        one node never ship each other's records."""
        # per user by default: another user's <tmp>/raymlp-spool would not be writable
        root = base or constants.spool_dir() or str(
            Path(tempfile.gettempdir()) / f"raymlp-spool-{os.getuid()}"
        )
        key = f"{self._config.storage.root}|{self._config.ray.namespace}"
        return Path(root) / hashlib.sha256(key.encode()).hexdigest()[:16]

    def logger(
        self,
        *,
        capacity: int,
        flush_interval_s: float,
        spool: bool = False,
        spool_dir: str | None = None,
    ) -> PredictionLogger:
        """A started :class:`PredictionLogger` (source ``gateway``) shipping to the monitor;
        ``spool``: with a node-local write-ahead spool (:mod:`raymlp._private.log_spool`)."""
        log_spool = None
        if spool:
            try:
                log_spool = LogSpool(self.spool_dir(spool_dir))
            except OSError as e:  # an unwritable spool must never cost the log itself
                logger.error("prediction-log spool off (memory only): %s", e)
        try:
            return PredictionLogger(
                self._actor,
                credential=self._caller,
                source="gateway",
                capacity=capacity,
                flush_interval_s=flush_interval_s,
                spool=log_spool,
            )
        except BaseException:
            if log_spool is not None:
                log_spool.close()
            raise


class ReplicaServices:
    """What a Serve replica reaches on the platform, acting as the service ``caller``:
    ``registry`` (get / get_traffic / subscribe), ``features`` (online lookups) and ``monitor``
    (the prediction logger)."""

    def __init__(self, config: PlatformConfig, caller: Caller) -> None:
        self.config = config
        self.caller = caller
        self.principal = caller.principal

    def actor(self, name: str) -> ActorClient:
        """A client on the named platform actor."""
        return ActorClient(name, self.config.ray.namespace)

    @cached_property
    def registry(self) -> RegistryReader:
        return RegistryReader(RegistryRPC(self.actor("registry"), self.caller))

    @cached_property
    def features(self) -> OnlineLookup:
        # with the replica's near-cache (feature_store.near_cache) of the rows it reads
        return OnlineLookup.from_config(self.config, self.caller, near_cache=True)

    def near_cache_stats(self) -> dict[str, Any] | None:
        """The near-cache's counters (None before the first online read, or when off)."""
        lookup = self.__dict__.get("features")
        return lookup.cache.stats() if lookup is not None and lookup.cache is not None else None

    def close(self) -> None:
        """Stop what this replica started on the platform (the near-cache's feeds)."""
        lookup = self.__dict__.get("features")
        if lookup is not None:
            lookup.close()

    @cached_property
    def monitor(self) -> ReplicaMonitor:
        return ReplicaMonitor(self.actor("monitor"), self.caller, self.config)


def service_platform(
    principal: str | None = None,
    config: PlatformConfig | dict[str, Any] | None = None,
    wait_s: float = 30.0,
) -> ReplicaServices:
    """The :class:`ReplicaServices` of a replica (Ray is already initialised there): ``config``
    as given by the deployer, else the one the registry actor was started with (waited for up
    to ``wait_s``: a replica may start while the platform comes up)."""
    if isinstance(config, dict):
        config = PlatformConfig.model_validate(config)
    if config is None:
        config = _config_from_registry(wait_s)
    return ReplicaServices(config, service_principal(config, principal))


def _config_from_registry(wait_s: float) -> PlatformConfig:
    from raymlp import _constants

    deadline = time.monotonic() + wait_s
    actor = ActorClient("registry", _constants.NAMESPACE)
    while True:
        try:
            return PlatformConfig.model_validate(actor.call("platform_config"))
        except (NotFoundError, UnavailableError):
            if time.monotonic() > deadline:
                raise UnavailableError(
                    "the raymlp platform is not up on this cluster (run `raymlp up`)"
                ) from None
            actor._handle = None
            time.sleep(0.5)
