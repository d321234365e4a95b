"""Roles, tenants and the four-eyes rule, on the registry logic without Ray."""

from __future__ import annotations

import pytest

from raymlp.config import AuthConfig, PlatformConfig
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

AUTH = {
    "tenants": [{"name": "default"}, {"name": "acme"}],
    "principals": [
        {"name": "admin", "roles": ["admin"]},
        {"name": "dev", "roles": ["developer"]},
        {"name": "appr", "roles": ["approver"]},
        {"name": "view", "roles": ["viewer"]},
        {"name": "acme-dev", "tenant": "acme", "roles": ["developer"]},
    ],
}
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


def test_resolve_actor_uses_config_not_claims():
    auth = AuthConfig.model_validate(AUTH)
    assert resolve_actor(auth, {"name": "view", "roles": ["admin"], "tenant": "acme"}) == Actor(
        "view", "default", ("viewer",)
    )
    with pytest.raises(AuthenticationError):
        resolve_actor(auth, {"name": "mallory"})
    off = AuthConfig()
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
    svc = RegistryService(cfg, Storage(str(tmp_path)))

    def reg(who, name, **kw):
        return svc.execute(
            {"name": who}, "register", {"name": name, "staged_path": None, "signature": SIG, **kw}
        )

    with pytest.raises(PermissionDeniedError):
        reg("view", "churn")
    with pytest.raises(PermissionDeniedError):
        reg("appr", "churn")
    assert reg("dev", "churn") == 1
    rid = svc.execute({"name": "dev"}, "request_promotion", {"name": "churn", "version": 1})
    with pytest.raises(PermissionDeniedError):
        svc.execute({"name": "dev"}, "approve", {"request_id": rid})
    with pytest.raises(PermissionDeniedError):
        svc.execute({"name": "acme-dev"}, "approve", {"request_id": rid})  # other tenant
    svc.execute({"name": "appr"}, "approve", {"request_id": rid})
    with pytest.raises(PermissionDeniedError):
        reg("acme-dev", "churn")
    assert reg("acme-dev", "acme-model") == 1
    assert [m["name"] for m in svc.query({"name": "view"}, "list_models", {})] == ["churn"]
    assert [m["name"] for m in svc.query({"name": "admin"}, "list_models", {})] == [
        "acme-model",
        "churn",
    ]
    assert reg("admin", "for-acme", tenant="acme") == 1
    assert svc.query({"name": "acme-dev"}, "get_version", {"name": "for-acme"})["tenant"] == "acme"
    acme_events = svc.events_after({"name": "acme-dev"}, 0)["events"]
    assert {e["tenant"] for e in acme_events} == {"acme"}
    assert svc.events_after({"name": "acme-dev"}, 0)["last_seq"] == svc.state.last_seq
