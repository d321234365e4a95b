"""The Python SDK: :func:`connect` returns a :class:`Platform`, the one door to the actors.

Used alike by user driver scripts, jobs, the CLI and Serve replicas::

    import raymlp
    p = raymlp.connect()                 # joins the running platform, or starts one locally
    p.features.apply("configs/features/churn.yaml")
    p.registry.get("customer-churn", alias="production")
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from raymlp import _constants
from raymlp._private import cluster
from raymlp._private.credentials import Caller
from raymlp._private.model_version import ModelVersion
from raymlp._private.prediction_logger import PredictionLogger
from raymlp._private.principals import resolve_principal
from raymlp._private.registry_watcher import RegistryWatcher
from raymlp._private.rpc import ActorClient
from raymlp.client._features import FeaturesClient
from raymlp.client._monitor import MonitorClient
from raymlp.client._registry import RegistryClient
from raymlp.client._serve import ServeClient
from raymlp.config import PlatformConfig, Principal, load_platform_config
from raymlp.storage import Storage

__all__ = [
    "connect",
    "Platform",
    "FeaturesClient",
    "RegistryClient",
    "MonitorClient",
    "ServeClient",
    "ModelVersion",
    "RegistryWatcher",
    "PredictionLogger",
]


class Platform:
    """A connected platform. Namespaces: ``features``, ``registry``, ``monitor``, ``serve``.

    Obtain one with :func:`connect`. ``caller`` is who acts and the credential it proves it
    with (every actor verifies it: RBAC, tenants, audit); ``principal`` is its verified record.
    """

    def __init__(self, config: PlatformConfig, caller: Caller, cluster_info: Any = None) -> None:
        if not isinstance(caller, Caller):
            raise TypeError(
                "Platform(config, caller): caller is a raymlp Caller (from connect() or "
                "as_principal()), not a Principal - a principal record proves nothing"
            )
        self.config = config
        self.caller = caller
        self.principal: Principal = caller.principal
        self.cluster = cluster_info
        self.storage = Storage(config.storage.root, config.storage.options)

    def __repr__(self) -> str:
        return f"<raymlp.Platform root={self.storage.root!r} principal={self.principal.name!r}>"

    def actor(self, name: str) -> ActorClient:
        """A client on the named platform actor."""
        return ActorClient(name, self.config.ray.namespace)

    def as_principal(self, *, api_key: str | None = None, principal: str | None = None) -> Platform:
        """The same platform acting as someone else (e.g. an approver)."""
        return Platform(
            self.config, resolve_principal(self.config, api_key, principal), self.cluster
        )

    def status(self) -> list[dict[str, Any]]:
        """One row per platform actor: actor, node, state, restarts, pid."""
        return cluster.platform_status(self.config)

    @property
    def dashboard_url(self) -> str | None:
        return getattr(self.cluster, "dashboard_url", None)

    @cached_property
    def features(self) -> FeaturesClient:
        """Feature store client (:class:`FeaturesClient`)."""
        return FeaturesClient(self)

    @cached_property
    def registry(self) -> RegistryClient:
        """Model registry and experiment tracking (:class:`RegistryClient`)."""
        return RegistryClient(self)

    @cached_property
    def monitor(self) -> MonitorClient:
        """Monitoring client (:class:`MonitorClient`)."""
        return MonitorClient(self)

    @cached_property
    def serve(self) -> ServeClient:
        """Serving client (:class:`ServeClient`)."""
        return ServeClient(self)


def connect(
    address: str | None = None,
    *,
    config: str | PlatformConfig | None = None,
    api_key: str | None = None,
    principal: str | None = None,
    start: cluster.StartMode = "embedded",
    create_actors: bool = True,
) -> Platform:
    """Attach to the running platform, bringing it up if needed; returns a :class:`Platform`.

    Args:
        address: Ray address (``auto``, ``local``, ``host:port``, ``ray://...``). Default:
            ``RAYMLP_ADDRESS``, then ``RAY_ADDRESS``, then ``ray.address`` of the config; a set
            ``RAY_ADDRESS`` also replaces ``auto``, as in Ray. ``auto`` joins the cluster
            recorded by the last ``ray start`` (else one whose raylet runs on this machine) if
            it answers; a recorded cluster that does not answer within
            ``RAYMLP_PROBE_TIMEOUT_S`` (3 s) - left behind by an unclean death - is passed over
            with one warning line and ``start`` applies. An explicit address that does not
            answer raises UnavailableError within that time: it is never replaced.
        config: platform.yaml path or a PlatformConfig (default: ``RAYMLP_CONFIG`` or
            ``configs/platform.yaml``). When the platform is already up, its published config
            is used; a config named explicitly (argument, ``RAYMLP_CONFIG`` or
            ``RAYMLP_STORAGE_ROOT``) with another storage root raises ConflictError.
        api_key / principal: who acts (default ``RAYMLP_API_KEY`` / ``RAYMLP_PRINCIPAL``).
        start: when no cluster answers at ``auto``: ``embedded`` (in this process),
            ``persistent`` (``ray start --head``) or ``never`` (UnavailableError).
        create_actors: create missing platform actors (idempotent).

    Raises:
        UnavailableError: an explicit address (or ``RAY_ADDRESS``) that accepts no connection,
            or no cluster at ``auto`` with ``start="never"``; one line naming the address.

    Example::

        p = raymlp.connect()
        print(p.status())
    """
    cfg = config if isinstance(config, PlatformConfig) else load_platform_config(config)
    explicit = config is not None or bool(
        _constants.config_file() or _constants.storage_root_override()
    )
    info = cluster.init_ray(cfg, address, start=start)
    if create_actors:
        cfg = cluster.ensure_platform(cfg, explicit=explicit)
    else:
        cfg = cluster.published_config() or cfg
    return Platform(cfg, resolve_principal(cfg, api_key, principal), info)
