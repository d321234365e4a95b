"""API-key authentication of HTTP callers and tenant isolation of models.

A caller sends its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The key's
SHA-256 is looked up among ``auth.principals`` of platform.yaml (keys are stored hashed):
no key or an unknown one is 401; a model of another tenant is 403 (admins see every tenant).
With no principals configured, auth is off and every caller is the local admin::

    auth = Authenticator(platform_config.auth)
    who = auth.authenticate(request.headers)        # Principal, or AuthenticationError (401)
    auth.check_tenant(who, "customer-churn", "acme") # PermissionDeniedError (403) if not allowed
"""

from __future__ import annotations

from collections.abc import Mapping

from raymlp._private.principals import LOCAL_ADMIN
from raymlp.config import AuthConfig, Principal, hash_api_key
from raymlp.errors import AuthenticationError, PermissionDeniedError

__all__ = ["Authenticator", "LOCAL_ADMIN", "api_key_from_headers"]


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key of a request (``Authorization: Bearer`` or ``X-API-Key``), if any."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Authenticator:
    """Maps API keys to principals (see the module docstring)."""

    def __init__(self, auth: AuthConfig) -> None:
        self.enabled = auth.enabled
        self._by_hash = {p.api_key_sha256: p for p in auth.principals if p.api_key_sha256}

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The calling principal; AuthenticationError (401) without a known key."""
        if not self.enabled:
            return LOCAL_ADMIN
        key = api_key_from_headers(headers)
        if key is None:
            raise AuthenticationError(
                "no API key (rule: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>')",
                rule="api key required",
            )
        principal = self._by_hash.get(hash_api_key(key))
        if principal is None:
            raise AuthenticationError("the API key is not known", rule="known api key")
        return principal

    @staticmethod
    def can_see(principal: Principal, tenant: str | None) -> bool:
        return tenant is None or "admin" in principal.roles or principal.tenant == tenant

    def check_tenant(self, principal: Principal, model: str, tenant: str | None) -> None:
        """PermissionDeniedError (403) when ``model`` belongs to another tenant."""
        if not self.can_see(principal, tenant):
            raise PermissionDeniedError(
                f"model {model!r} belongs to another tenant than principal "
                f"{principal.name!r} (tenant {principal.tenant!r}) (rule: tenants are isolated)",
                principal=principal.name,
                tenant=principal.tenant,
                model=model,
                rule="tenant isolation",
            )
