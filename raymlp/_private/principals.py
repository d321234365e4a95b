"""Who acts: the one place a process decides which :class:`~raymlp._private.credentials.Caller`
it is, for the SDK, the Serve replicas, the monitor and the deploy checks.

* :func:`resolve_principal` — a caller (``connect(api_key=..., principal=...)``, the CLI, jobs);
  errors are :class:`~raymlp.errors.AuthenticationError`.
* :func:`service_principal` — the service principal a platform component (a Serve application,
  the monitor) acts as towards the actors (never an HTTP caller's identity); it authenticates
  with tokens signed by the platform secret. Errors are :class:`~raymlp.errors.ConfigError`
  naming the ``principal`` field.

The actors verify every credential themselves (:class:`~raymlp._private.credentials.Authenticator`);
what is resolved here only decides what this process *sends*. With auth off (a laptop, a test
cluster) both fall back to :data:`LOCAL_ADMIN`; any other name acts as a local admin too, kept
for the audit log.
"""

from __future__ import annotations

from raymlp import _constants
from raymlp._private.credentials import LOCAL_ADMIN, Caller, PlatformSecret, local_principal
from raymlp.config import PlatformConfig, Principal
from raymlp.errors import AuthenticationError, ConfigError

__all__ = ["LOCAL_ADMIN", "check_service_principal", "resolve_principal", "service_principal"]


def resolve_principal(
    cfg: PlatformConfig, api_key: str | None = None, principal: str | None = None
) -> Caller:
    """The caller this process acts as: by API key, else (``RAYMLP_API_KEY`` /
    ``RAYMLP_PRINCIPAL`` when not given) a service principal by name, else
    ``auth.default_principal``.

    A principal with an API key can only be acted as with that key; acting as a keyless
    service principal needs the platform secret (readable on the cluster only)."""
    api_key = api_key or _constants.api_key()
    principal = principal or _constants.principal_name()
    if api_key:
        p = cfg.auth.by_api_key(api_key)
        if p is None:
            raise AuthenticationError("the API key is not known to this platform")
        return Caller(p, api_key=api_key)
    if not cfg.auth.enabled:
        return Caller(local_principal(principal))
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
    if found.api_key_sha256:
        raise AuthenticationError(
            f"principal {name!r} has an API key: authenticate with it, not by name "
            "(rule: a name is never a credential)",
            principal=name,
        )
    secret = PlatformSecret.load(cfg)
    if secret is None:
        raise AuthenticationError(
            f"principal {name!r} is a service principal and the platform secret is not "
            "readable here (rule: service principals authenticate with platform-signed tokens)",
            principal=name,
        )
    return Caller(found, secret=secret, token_ttl_s=cfg.auth.token_ttl_s)


def service_principal(cfg: PlatformConfig, name: str | None) -> Caller:
    """The service principal ``name`` of a platform component (default:
    ``auth.default_principal``; a local admin when auth is off), with the platform secret to
    sign its tokens."""
    found = check_service_principal(cfg, name)
    if not cfg.auth.enabled:
        return Caller(found)
    secret = PlatformSecret.load(cfg)
    if secret is None:
        raise ConfigError(
            f"service principal {found.name!r}: the platform secret is not readable in this "
            "process (set RAYMLP_PLATFORM_SECRET or auth.secret_file, or run `raymlp up` first)",
            field="auth.secret_file",
        )
    return Caller(found, secret=secret, token_ttl_s=cfg.auth.token_ttl_s)


def check_service_principal(cfg: PlatformConfig, name: str | None) -> Principal:
    """The configured service principal ``name`` (what a deploy checks up front, without the
    secret); ConfigError naming ``principal`` when it is missing, unknown or has an API key."""
    if not cfg.auth.enabled:
        return LOCAL_ADMIN if name is None else local_principal(name)
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
    if found.api_key_sha256:
        raise ConfigError(
            f"principal {name!r} has an API key, so it is not a service principal (rule: a "
            "service principal has no api_key_sha256 and authenticates with platform tokens)",
            field="principal",
            value=name,
        )
    return found
