"""Roles, tenants and the four-eyes rule, on the registry logic without Ray."""

from __future__ import annotations

import pytest

from raymlp._private.credentials import Authenticator, PlatformSecret, mint_token
from raymlp.config import AuthConfig, PlatformConfig, hash_api_key
from raymlp.errors import AuthenticationError, PermissionDeniedError
from raymlp.registry.rbac import (
    Action,
    Actor,
    authorize,
    check_not_requester,
    check_tenant,
    resolve_actor,
)
from raymlp.registry.service import RegistryService
from raymlp.storage import Storage


def _key(name: str) -> str:
    return f"key-of-{name}"


AUTH = {
    "tenants": [{"name": "default"}, {"name": "acme"}],
    "principals": [
        {"name": n, "tenant": t, "roles": r, "api_key_sha256": hash_api_key(_key(n))}
        for n, t, r in [
            ("admin", "default", ["admin"]),
            ("dev", "default", ["developer"]),
            ("appr", "default", ["approver"]),
            ("view", "default", ["viewer"]),
            ("acme-dev", "acme", ["developer"]),
        ]
    ]
    + [{"name": "svc", "roles": ["viewer"]}],  # a service principal: tokens only
}


def cred(name: str) -> dict[str, str]:
    """What a caller holding ``name``'s API key sends."""
    return {"name": name, "api_key": _key(name)}
SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}


@pytest.mark.parametrize(
    "roles, allowed",
    [
        (("viewer",), {Action.READ}),
        (("developer",), {Action.READ, Action.WRITE, Action.ROLLBACK}),
        (("approver",), {Action.READ, Action.APPROVE, Action.ROLLBACK}),
        (("admin",), {Action.READ, Action.WRITE, Action.APPROVE, Action.ROLLBACK, Action.ADMIN}),
        ((), set()),
    ],
)
def test_role_matrix(roles, allowed):
    actor = Actor("p", "default", roles)
    for action in (Action.READ, Action.WRITE, Action.APPROVE, Action.ROLLBACK, Action.ADMIN):
        if action in allowed:
            authorize(actor, action)
        else:
            with pytest.raises(PermissionDeniedError) as e:
                authorize(actor, action, "model 'churn'")
            assert e.value.principal == "p" and e.value.action == action
            assert e.value.http_status == 403


def test_resolve_actor_verifies_the_credential_never_the_claims():
    auth = Authenticator(AuthConfig.model_validate(AUTH), b"s3cret")
    claimed = {"name": "view", "roles": ["admin"], "tenant": "acme", "api_key": _key("view")}
    assert resolve_actor(auth, claimed) == Actor("view", "default", ("viewer",))
    # A name (even a real one) proves nothing; nor does a missing credential.
    for forged in ({"name": "admin"}, {"name": "admin", "roles": ["admin"]}, None, {}):
        with pytest.raises(AuthenticationError):
            resolve_actor(auth, forged)
    with pytest.raises(AuthenticationError, match="not known"):
        resolve_actor(auth, {"name": "admin", "api_key": "guess"})
    # A service principal authenticates with a token signed by the platform secret ...
    assert resolve_actor(auth, {"token": mint_token(b"s3cret", "svc", 60)}).name == "svc"
    with pytest.raises(AuthenticationError, match="signature"):
        resolve_actor(auth, {"token": mint_token(b"other", "svc", 60)})
    # ... and a token can never stand for a principal that has an API key.
    with pytest.raises(AuthenticationError, match="not a service principal"):
        resolve_actor(auth, {"token": mint_token(b"s3cret", "admin", 60)})
    off = Authenticator(AuthConfig(), None)
    assert resolve_actor(off, {"name": "anyone", "roles": []}).roles == ("admin",)
    assert resolve_actor(off, None).name == "local-admin"


def test_tenant_and_four_eyes_helpers():
    dev = Actor("dev", "default", ("developer", "approver"))
    check_tenant(dev, "default", "model 'x'")
    with pytest.raises(PermissionDeniedError) as e:
        check_tenant(dev, "acme", "model 'x'")
    assert e.value.rule == "tenant isolation"
    check_tenant(Actor("root", "default", ("admin",)), "acme", "model 'x'")
    with pytest.raises(PermissionDeniedError) as e:
        check_not_requester(dev, "dev", "pr-1")
    assert e.value.rule == "four-eyes"
    check_not_requester(dev, "someone-else", "pr-1")


def test_service_enforces_roles_and_tenants(tmp_path):
    cfg = PlatformConfig.model_validate({"storage": {"root": str(tmp_path)}, "auth": AUTH})
    PlatformSecret.ensure(cfg)
    svc = RegistryService(cfg, Storage(str(tmp_path)))

    def reg(who, name, **kw):
        return svc.execute(
            cred(who), "register", {"name": name, "staged_path": None, "signature": SIG, **kw}
        )

    with pytest.raises(PermissionDeniedError):
        reg("view", "churn")
    with pytest.raises(PermissionDeniedError):
        reg("appr", "churn")
    assert reg("dev", "churn") == 1
    rid = svc.execute(cred("dev"), "request_promotion", {"name": "churn", "version": 1})
    with pytest.raises(PermissionDeniedError):
        svc.execute(cred("dev"), "approve", {"request_id": rid})
    with pytest.raises(PermissionDeniedError):
        svc.execute(cred("acme-dev"), "approve", {"request_id": rid})  # other tenant
    svc.execute(cred("appr"), "approve", {"request_id": rid})
    with pytest.raises(PermissionDeniedError):
        reg("acme-dev", "churn")
    assert reg("acme-dev", "acme-model") == 1
    assert [m["name"] for m in svc.query(cred("view"), "list_models", {})] == ["churn"]
    assert [m["name"] for m in svc.query(cred("admin"), "list_models", {})] == [
        "acme-model",
        "churn",
    ]
    assert reg("admin", "for-acme", tenant="acme") == 1
    assert svc.query(cred("acme-dev"), "get_version", {"name": "for-acme"})["tenant"] == "acme"
    acme_events = svc.events_after(cred("acme-dev"), 0)["events"]
    assert {e["tenant"] for e in acme_events} == {"acme"}
    assert svc.events_after(cred("acme-dev"), 0)["last_seq"] == svc.state.last_seq
