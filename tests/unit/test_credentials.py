"""Credentials: API keys and platform-signed service tokens, verified without trusting claims."""

from __future__ import annotations

import os
import stat

import pytest

from raymlp._private.credentials import (
    Authenticator,
    Caller,
    PlatformSecret,
    mint_token,
    verify_token,
)
from raymlp._private.principals import resolve_principal, service_principal
from raymlp.config import PlatformConfig, hash_api_key
from raymlp.errors import AuthenticationError, ConfigError


def _cfg(tmp_path, **auth) -> PlatformConfig:
    return PlatformConfig.model_validate({
        "storage": {"root": str(tmp_path / "root")},
        "auth": {
            "principals": [
                {"name": "alice", "roles": ["developer"], "api_key_sha256": hash_api_key("ka")},
                {"name": "bob", "roles": ["approver"], "api_key_sha256": hash_api_key("kb")},
                {"name": "monitor", "roles": ["developer"]},
            ],
            **auth,
        },
    })


def test_tokens_verify_and_expire_and_cannot_be_forged():
    tok = mint_token(b"k1", "monitor", ttl_s=60, now=1000)
    assert verify_token(b"k1", tok, now=1059) == "monitor"
    with pytest.raises(AuthenticationError, match="expired"):
        verify_token(b"k1", tok, now=1061)
    with pytest.raises(AuthenticationError, match="signature"):
        verify_token(b"k2", tok, now=1000)
    body, mac = tok.rsplit(".", 1)
    renamed = body.replace("monitor", "alice") + "." + mac
    with pytest.raises(AuthenticationError, match="signature"):
        verify_token(b"k1", renamed, now=1000)
    for bad in ("", "x", "rmlp1.a.b.c", "rmlp2.monitor.1.00", None):
        with pytest.raises(AuthenticationError):
            verify_token(b"k1", bad, now=1000)  # type: ignore[arg-type]


def test_platform_secret_is_created_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYMLP_PLATFORM_SECRET", raising=False)
    cfg = _cfg(tmp_path)
    assert PlatformSecret.load(cfg) is None
    s1 = PlatformSecret.ensure(cfg)
    assert s1 and PlatformSecret.ensure(cfg) == s1 == PlatformSecret.load(cfg)
    path = tmp_path / "root" / "_platform" / "secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    monkeypatch.setenv("RAYMLP_PLATFORM_SECRET", "from-env")
    assert PlatformSecret.load(cfg) == b"from-env"
    # Auth off: no secret is made.
    off = PlatformConfig.model_validate({"storage": {"root": str(tmp_path / "off")}})
    monkeypatch.delenv("RAYMLP_PLATFORM_SECRET")
    assert PlatformSecret.ensure(off) is None


def test_a_named_secret_file_that_is_missing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYMLP_PLATFORM_SECRET", raising=False)
    cfg = _cfg(tmp_path, secret_file=str(tmp_path / "nope"))
    with pytest.raises(AuthenticationError) as e:
        PlatformSecret.ensure(cfg)
    assert e.value.context["field"] == "auth.secret_file"


def test_resolving_a_principal_never_accepts_a_bare_name(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYMLP_PLATFORM_SECRET", raising=False)
    monkeypatch.delenv("RAYMLP_API_KEY", raising=False)
    monkeypatch.delenv("RAYMLP_PRINCIPAL", raising=False)
    cfg = _cfg(tmp_path)
    assert resolve_principal(cfg, api_key="kb").wire() == {"name": "bob", "api_key": "kb"}
    with pytest.raises(AuthenticationError, match="authenticate with it"):
        resolve_principal(cfg, principal="bob")
    with pytest.raises(AuthenticationError, match="not known"):
        resolve_principal(cfg, api_key="guess")
    # A keyless (service) principal needs the platform secret to act.
    with pytest.raises(AuthenticationError, match="secret"):
        resolve_principal(cfg, principal="monitor")
    PlatformSecret.ensure(cfg)
    caller = resolve_principal(cfg, principal="monitor")
    auth = Authenticator.from_config(cfg)
    assert auth.authenticate(caller.wire()).name == "monitor"
    assert service_principal(cfg, "monitor").wire()["token"].startswith("rmlp1.monitor.")
    with pytest.raises(ConfigError, match="not a service principal"):
        service_principal(cfg, "alice")


def test_caller_renews_its_token_before_expiry(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("raymlp._private.credentials.time.time", lambda: clock[0])
    from raymlp.config import Principal

    c = Caller(Principal(name="monitor", roles=["developer"]), secret=b"k", token_ttl_s=90)
    t1 = c.wire()["token"]
    clock[0] += 30
    assert c.wire()["token"] == t1  # still fresh
    clock[0] += 31  # under a third of the lifetime left
    t2 = c.wire()["token"]
    assert t2 != t1 and verify_token(b"k", t2, now=clock[0] + 89) == "monitor"


def test_auth_off_everyone_is_a_local_admin_by_name():
    off = Authenticator(PlatformConfig().auth, None)
    assert off.authenticate({"name": "ci"}).roles == ["admin"]
    assert off.authenticate(None).name == "local-admin"
