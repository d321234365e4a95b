"""Who acts: the one place principals are resolved, for the SDK, the Serve replicas and the
deploy checks.

* :func:`resolve_principal` — a caller (``connect(api_key=..., principal=...)``, the CLI, jobs);
  errors are :class:`~raymlp.errors.AuthenticationError`.
* :func:`service_principal` — the principal a Serve application acts as towards the registry and
  the feature store (never an HTTP caller's identity); errors are
  :class:`~raymlp.errors.ConfigError` naming the serve config's ``principal`` field.

With auth off (a laptop, a test cluster) both fall back to :data:`LOCAL_ADMIN`; any other name
acts as a local admin too, kept for the audit log.
"""

from __future__ import annotations

from raymlp import _constants
from raymlp.config import PlatformConfig, Principal
from raymlp.errors import AuthenticationError, ConfigError

__all__ = ["LOCAL_ADMIN", "resolve_principal", "service_principal"]

#: Local identity when auth has no principals configured (a laptop or a test cluster).
LOCAL_ADMIN = Principal(name="local-admin", tenant="default", roles=["admin"])


def _local(name: str | None) -> Principal:
    if name and name != LOCAL_ADMIN.name:
        return Principal(name=name, tenant="default", roles=["admin"])
    return LOCAL_ADMIN


def resolve_principal(
    cfg: PlatformConfig, api_key: str | None = None, principal: str | None = None
) -> Principal:
    """The principal a caller acts as: by API key, else by name (``RAYMLP_API_KEY`` /
    ``RAYMLP_PRINCIPAL`` when not given), else ``auth.default_principal``."""
    api_key = api_key or _constants.api_key()
    principal = principal or _constants.principal_name()
    if api_key:
        p = cfg.auth.by_api_key(api_key)
        if p is None:
            raise AuthenticationError("the API key is not known to this platform")
        return p
    if not cfg.auth.enabled:
        return _local(principal)
    name = principal or cfg.auth.default_principal
    if name is None:
        raise AuthenticationError(
            "auth is enabled: give an API key (RAYMLP_API_KEY or connect(api_key=...))"
        )
    found = cfg.auth.by_name(name)
    if found is None:
        raise AuthenticationError(
            f"principal {name!r} is not known to this platform", principal=name
        )
    if found.api_key_sha256 and principal is not None and principal != cfg.auth.default_principal:
        raise AuthenticationError(
            f"principal {name!r} has an API key: authenticate with it, not by name",
            principal=name,
        )
    return found


def service_principal(cfg: PlatformConfig, name: str | None) -> Principal:
    """The service principal ``name`` of a Serve application (default:
    ``auth.default_principal``; a local admin when auth is off)."""
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
