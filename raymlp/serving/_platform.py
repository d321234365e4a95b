"""The platform as seen from inside a Serve replica: the published config and the service
principal the application acts as (never an HTTP caller's identity)."""

from __future__ import annotations

import time
from typing import Any

from raymlp.client import LOCAL_ADMIN, Platform
from raymlp.config import PlatformConfig, Principal
from raymlp.errors import ConfigError, UnavailableError

__all__ = ["service_principal", "service_platform"]


def service_principal(cfg: PlatformConfig, name: str | None) -> Principal:
    """The principal named ``name`` (default: ``auth.default_principal``; local admin when auth
    is off)."""
    if not cfg.auth.enabled:
        return (
            LOCAL_ADMIN if name is None else Principal(name=name, tenant="default", roles=["admin"])
        )
    name = name or cfg.auth.default_principal
    if name is None:
        raise ConfigError(
            "auth is enabled: the serve config needs 'principal' (a service principal of "
            "platform.yaml) to act as towards the registry and the feature store",
            field="principal",
        )
    found = cfg.auth.by_name(name)
    if found is None:
        raise ConfigError(
            f"principal {name!r} is not in platform.yaml auth.principals",
            field="principal",
            value=name,
        )
    return found


def service_platform(
    principal: str | None = None,
    config: PlatformConfig | dict[str, Any] | None = None,
    wait_s: float = 30.0,
) -> Platform:
    """A :class:`~raymlp.client.Platform` for a replica (Ray is already initialised there):
    ``config`` as given by the deployer, else the one ``raymlp up`` published on the cluster
    (waited for up to ``wait_s``: a replica may start while the platform comes up)."""
    if isinstance(config, dict):
        config = PlatformConfig.model_validate(config)
    if config is None:
        from raymlp._private.cluster import published_config

        deadline = time.monotonic() + wait_s
        while (config := published_config()) is None:
            if time.monotonic() > deadline:
                raise UnavailableError(
                    "the raymlp platform is not up on this cluster (run `raymlp up`)"
                )
            time.sleep(0.5)
    return Platform(config, service_principal(config, principal))
