"""Credentials: how a caller proves to a platform actor who it is.

Every actor method that acts for someone takes a *credential* (a plain dict on the wire) and
verifies it itself; what a caller says about its name, tenant or roles is never believed:

* ``{"name": "alice", "api_key": "..."}`` — a person (or a CI job) with an API key; the actor
  hashes the key and looks it up among ``auth.principals`` (keys are stored hashed).
* ``{"name": "monitor", "token": "rmlp1.monitor.<expiry>.<hmac>"}`` — a *service principal*
  (a principal with no API key: the monitor, the serving replicas, jobs). The token is signed
  with the platform secret (:class:`PlatformSecret`) and expires after ``auth.token_ttl_s``.
  Only keyless principals can authenticate by token, so holding the secret never lets anyone
  act as a person who has an API key.

With auth off (no principals configured: a laptop, a test cluster) every caller is a local
admin and the name is kept for the audit log only.

Example::

    auth = Authenticator(cfg.auth, PlatformSecret.load(cfg))
    auth.authenticate({"name": "alice", "api_key": key})      # -> Principal(alice, ...)
    Caller(principal, api_key=key).wire()                     # what the SDK sends
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from typing import Any

from raymlp import _constants
from raymlp.config import AuthConfig, PlatformConfig, Principal, hash_api_key
from raymlp.errors import AuthenticationError, StorageError

__all__ = [
    "LOCAL_ADMIN",
    "Authenticator",
    "Caller",
    "PlatformSecret",
    "mint_token",
    "verify_token",
]

#: Local identity when auth has no principals configured (a laptop or a test cluster).
LOCAL_ADMIN = Principal(name="local-admin", tenant="default", roles=["admin"])

TOKEN_VERSION = "rmlp1"
#: Where ``raymlp up`` keeps the generated platform secret, under the storage root.
SECRET_PATH = "_platform/secret"


def local_principal(name: str | None) -> Principal:
    """The auth-off identity: a local admin, named for the audit log."""
    if name and name != LOCAL_ADMIN.name:
        return Principal(name=name, tenant="default", roles=["admin"])
    return LOCAL_ADMIN


class PlatformSecret:
    """The key service tokens are signed with: ``$RAYMLP_PLATFORM_SECRET``, else the file
    ``auth.secret_file``, else ``<storage root>/_platform/secret`` (created by ``raymlp up``
    with mode 0600). Anyone who can read it can act as a service principal: it is as sensitive
    as the Ray cluster token (see docs/security.md)."""

    @staticmethod
    def load(cfg: PlatformConfig) -> bytes | None:
        """The secret, or None where this process cannot read it."""
        env = _constants.platform_secret()
        if env:
            return env
        if cfg.auth.secret_file:
            try:
                with open(os.path.expanduser(cfg.auth.secret_file), "rb") as f:
                    return f.read().strip() or None
            except OSError:
                return None
        from raymlp.storage import Storage

        try:
            return Storage(cfg.storage.root, cfg.storage.options).read_bytes(SECRET_PATH).strip()
        except StorageError:
            return None

    @staticmethod
    def ensure(cfg: PlatformConfig) -> bytes | None:
        """Load the secret, creating it under the storage root when auth is on and none exists
        (what ``raymlp up`` does); None with auth off."""
        found = PlatformSecret.load(cfg)
        if found is not None or not cfg.auth.enabled:
            return found
        if cfg.auth.secret_file:
            raise AuthenticationError(
                f"auth.secret_file {cfg.auth.secret_file!r} cannot be read "
                "(rule: the platform secret file must exist and be readable)",
                field="auth.secret_file",
            )
        from raymlp.storage import Storage

        storage = Storage(cfg.storage.root, cfg.storage.options)
        value = secrets.token_hex(32).encode()
        storage.write_bytes(SECRET_PATH, value)
        if storage.is_local:
            os.chmod(storage.local_path(SECRET_PATH), 0o600)
        return value


def _sign(secret: bytes, body: str) -> str:
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()


def mint_token(secret: bytes, name: str, ttl_s: float, now: float | None = None) -> str:
    """A service token for principal ``name``, valid ``ttl_s`` seconds."""
    expiry = int((now if now is not None else time.time()) + ttl_s)
    body = f"{TOKEN_VERSION}.{name}.{expiry}"
    return f"{body}.{_sign(secret, body)}"


def verify_token(secret: bytes, token: str, now: float | None = None) -> str:
    """The principal name a token was minted for; AuthenticationError when it is malformed,
    forged or expired."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 4 or parts[0] != TOKEN_VERSION or not parts[2].isdigit():
        raise AuthenticationError("the service token is malformed (rule: rmlp1.<name>.<expiry>.<mac>)")
    body = ".".join(parts[:3])
    if not hmac.compare_digest(_sign(secret, body), parts[3]):
        raise AuthenticationError("the service token's signature is not valid", principal=parts[1])
    if int(parts[2]) < (now if now is not None else time.time()):
        raise AuthenticationError("the service token has expired", principal=parts[1])
    return parts[1]


class Authenticator:
    """Verifies credentials against one auth config (what every actor and gateway holds)."""

    def __init__(self, auth: AuthConfig, secret: bytes | None) -> None:
        self.auth = auth
        self._secret = secret
        self._by_hash = {p.api_key_sha256: p for p in auth.principals if p.api_key_sha256}

    @classmethod
    def from_config(cls, cfg: PlatformConfig) -> Authenticator:
        return cls(cfg.auth, PlatformSecret.load(cfg) if cfg.auth.enabled else None)

    @property
    def enabled(self) -> bool:
        return self.auth.enabled

    def authenticate(self, credential: dict[str, Any] | Caller | None) -> Principal:
        """The verified principal behind ``credential``; AuthenticationError (HTTP 401) when
        auth is on and the credential proves nothing."""
        if isinstance(credential, Caller):
            credential = credential.wire()
        cred = credential if isinstance(credential, dict) else {}
        if not self.auth.enabled:
            name = cred.get("name")
            return local_principal(name if isinstance(name, str) else None)
        key, token = cred.get("api_key"), cred.get("token")
        if isinstance(key, str) and key:
            found = self._by_hash.get(hash_api_key(key))
            if found is None:
                raise AuthenticationError("the API key is not known to this platform")
            return found
        if isinstance(token, str) and token:
            if self._secret is None:
                raise AuthenticationError(
                    "service tokens cannot be verified here: the platform secret is not readable"
                )
            name = verify_token(self._secret, token)
            found = self.auth.by_name(name)
            if found is None or found.api_key_sha256:
                # A principal with an API key authenticates with it, never with a token.
                raise AuthenticationError(
                    f"principal {name!r} is not a service principal of this platform "
                    "(rule: tokens only for principals without an API key)",
                    principal=name,
                )
            return found
        raise AuthenticationError(
            "auth is enabled and the call carries no credential (rule: an API key or a "
            "service token on every call)"
        )


class Caller:
    """Who acts and how it proves it: a verified :class:`Principal` plus its API key, or the
    platform secret to mint service tokens with (renewed before they expire).

    Example::

        caller = Caller(principal, api_key="...")
        actor.method.remote(caller.wire(), ...)
    """

    def __init__(
        self,
        principal: Principal,
        *,
        api_key: str | None = None,
        secret: bytes | None = None,
        token_ttl_s: float = 900.0,
    ) -> None:
        self.principal = principal
        self._api_key = api_key
        self._secret = secret
        self._ttl = token_ttl_s
        self._token: tuple[str, float] | None = None

    @property
    def name(self) -> str:
        return self.principal.name

    def wire(self) -> dict[str, str]:
        """The credential as an actor method takes it."""
        if self._api_key:
            return {"name": self.principal.name, "api_key": self._api_key}
        if self._secret is not None:
            now = time.time()
            if self._token is None or self._token[1] - now < self._ttl / 3:
                self._token = (mint_token(self._secret, self.principal.name, self._ttl, now),
                               now + self._ttl)
            return {"name": self.principal.name, "token": self._token[0]}
        return {"name": self.principal.name}

    def __repr__(self) -> str:
        return f"<Caller {self.principal.name!r}>"
