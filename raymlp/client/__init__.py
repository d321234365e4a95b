"""The Python SDK: :func:`connect` returns a :class:`Platform`, the one door to the actors.

Used alike by user driver scripts, jobs, the CLI and Serve replicas::

    import raymlp
    p = raymlp.connect()                 # joins the running platform, or starts one locally
    p.features.apply("configs/features/churn.yaml")
    p.registry.get("customer-churn", alias="production")
"""

from __future__ import annotations

import importlib
from functools import cached_property
from typing import Any

from raymlp import _constants
from raymlp._private import cluster
from raymlp.client._rpc import ActorClient, call
from raymlp.config import PlatformConfig, Principal, load_platform_config
from raymlp.errors import AuthenticationError
from raymlp.storage import Storage

__all__ = ["connect", "Platform", "ActorClient", "call"]

#: Local identity when auth has no principals configured (a laptop or a test cluster).
LOCAL_ADMIN = Principal(name="local-admin", tenant="default", roles=["admin"])


def _resolve_principal(cfg: PlatformConfig, api_key: str | None, principal: str | None) -> Principal:
    api_key = api_key or _constants.api_key()
    principal = principal or _constants.principal_name()
    if api_key:
        p = cfg.auth.by_api_key(api_key)
        if p is None:
            raise AuthenticationError("the API key is not known to this platform")
        return p
    if not cfg.auth.enabled:
        if principal and principal != LOCAL_ADMIN.name:
            # Auth is off: any name acts as a local admin, kept for the audit log.
            return Principal(name=principal, tenant="default", roles=["admin"])
        return LOCAL_ADMIN
    name = principal or cfg.auth.default_principal
    if name is None:
        raise AuthenticationError(
            "auth is enabled: give an API key (RAYMLP_API_KEY or connect(api_key=...))"
        )
    found = cfg.auth.by_name(name)
    if found is None:
        raise AuthenticationError(f"principal {name!r} is not known to this platform",
                                  principal=name)
    if found.api_key_sha256 and principal is not None and principal != cfg.auth.default_principal:
        raise AuthenticationError(
            f"principal {name!r} has an API key: authenticate with it, not by name",
            principal=name,
        )
    return found


class Platform:
    """A connected platform. Namespaces: ``features``, ``registry``, ``monitor``, ``serve``.

    Obtain one with :func:`connect`. ``principal`` is who acts (audit events, RBAC).
    """

    def __init__(self, config: PlatformConfig, principal: Principal, cluster_info: Any = None) -> None:
        self.config = config
        self.principal = principal
        self.cluster = cluster_info
        self.storage = Storage(config.storage.root, config.storage.options)

    def __repr__(self) -> str:
        return f"<raymlp.Platform root={self.storage.root!r} principal={self.principal.name!r}>"

    def actor(self, name: str) -> ActorClient:
        """A client on the named platform actor."""
        return ActorClient(name, self.config.ray.namespace)

    def as_principal(self, *, api_key: str | None = None, principal: str | None = None) -> Platform:
        """The same platform acting as someone else (e.g. an approver)."""
        return Platform(self.config, _resolve_principal(self.config, api_key, principal), self.cluster)

    def status(self) -> list[dict[str, Any]]:
        """One row per platform actor: actor, node, state, restarts, pid."""
        return cluster.platform_status(self.config)

    @property
    def dashboard_url(self) -> str | None:
        return getattr(self.cluster, "dashboard_url", None)

    def _namespace(self, module: str, cls: str) -> Any:
        mod = importlib.import_module(module)
        return getattr(mod, cls)(self)

    @cached_property
    def features(self) -> Any:
        """Feature store client (:class:`raymlp.client._features.FeaturesClient`)."""
        return self._namespace("raymlp.client._features", "FeaturesClient")

    @cached_property
    def registry(self) -> Any:
        """Model registry and experiment tracking (:class:`raymlp.client._registry.RegistryClient`)."""
        return self._namespace("raymlp.client._registry", "RegistryClient")

    @cached_property
    def monitor(self) -> Any:
        """Monitoring client (:class:`raymlp.client._monitor.MonitorClient`)."""
        return self._namespace("raymlp.client._monitor", "MonitorClient")

    @cached_property
    def serve(self) -> Any:
        """Serving client (:class:`raymlp.client._serve.ServeClient`)."""
        return self._namespace("raymlp.client._serve", "ServeClient")


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
            ``RAYMLP_ADDRESS``, then ``ray.address`` of the config.
        config: platform.yaml path or a PlatformConfig (default: ``RAYMLP_CONFIG`` or
            ``configs/platform.yaml``). When the platform is already up, its published config
            is used; a config named explicitly (argument, ``RAYMLP_CONFIG`` or
            ``RAYMLP_STORAGE_ROOT``) with another storage root raises ConflictError.
        api_key / principal: who acts (default ``RAYMLP_API_KEY`` / ``RAYMLP_PRINCIPAL``).
        start: when no cluster runs: ``embedded`` (in this process), ``persistent``
            (``ray start --head``) or ``never``.
        create_actors: create missing platform actors (idempotent).

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
    return Platform(cfg, _resolve_principal(cfg, api_key, principal), info)
