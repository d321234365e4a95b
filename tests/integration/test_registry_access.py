"""RBAC and tenant isolation of the registry actor, with auth switched on."""

from __future__ import annotations

import pytest
import ray

from raymlp._private.rpc import call
from raymlp.config import PlatformConfig
from raymlp.errors import AuthenticationError, NotFoundError, PermissionDeniedError

SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}


@pytest.fixture
def platform_config(tmp_path) -> PlatformConfig:
    return PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "auth": {
                "tenants": [{"name": "default"}, {"name": "acme"}],
                "principals": [
                    {"name": "admin", "roles": ["admin"]},
                    {"name": "dev", "roles": ["developer"]},
                    {"name": "lead", "roles": ["developer", "approver"]},
                    {"name": "appr", "roles": ["approver"]},
                    {"name": "view", "roles": ["viewer"]},
                    {"name": "acme-dev", "tenant": "acme", "roles": ["developer", "approver"]},
                ],
                "default_principal": "admin",
            },
            "registry": {"approval_overrides": {"sandbox": False}},
        }
    )


def test_roles_and_four_eyes(platform, tmp_path):
    art = tmp_path / "m"
    art.mkdir()
    (art / "w").write_text("w")
    as_ = {
        n: platform.as_principal(principal=n).registry
        for n in ("dev", "lead", "appr", "view", "acme-dev")
    }
    with pytest.raises(PermissionDeniedError) as e:
        as_["view"].register("churn", art, signature=SIG)
    assert e.value.required_role == "developer" and e.value.principal == "view"
    v = as_["dev"].register("churn", art, signature=SIG)
    assert as_["view"].get("churn").version == v  # viewers read
    rid = as_["dev"].request_promotion("churn", v, reason="ship it")
    with pytest.raises(PermissionDeniedError) as e:
        as_["dev"].approve(rid)  # a developer is not an approver
    assert e.value.required_role == "approver"
    with pytest.raises(PermissionDeniedError):
        as_["view"].approve(rid)
    rid_lead = as_["lead"].request_promotion("churn", v, alias="champion")
    with pytest.raises(PermissionDeniedError) as e:
        as_["lead"].approve(rid_lead)  # holds the role, but requested it
    assert e.value.rule == "four-eyes"
    with pytest.raises(PermissionDeniedError):
        as_["appr"].register("churn", art, signature=SIG)
    as_["appr"].approve(rid)
    assert as_["view"].get("churn", alias="production").version == v
    as_["appr"].reject(rid_lead, reason="no need")
    # per-model override: sandbox promotes without approval
    as_["dev"].register("sandbox", art, signature=SIG)
    assert as_["dev"].promote("sandbox", 1)["alias"] == "production"
    with pytest.raises(PermissionDeniedError):
        as_["view"].rollback("churn")


def test_tenants_are_isolated(platform, tmp_path):
    art = tmp_path / "m"
    art.mkdir()
    (art / "w").write_text("w")
    dev = platform.as_principal(principal="dev").registry
    acme = platform.as_principal(principal="acme-dev").registry
    dev.register(
        "churn",
        art,
        signature=SIG,
        lineage={"feature_views": [{"name": "shared_view", "version": 1}]},
    )
    acme.register(
        "acme-churn",
        art,
        signature=SIG,
        lineage={"feature_views": [{"name": "shared_view", "version": 2}]},
    )
    with pytest.raises(PermissionDeniedError) as e:
        acme.get("churn")
    assert e.value.rule == "tenant isolation"
    with pytest.raises(PermissionDeniedError):
        acme.register("churn", art, signature=SIG)  # cannot add versions to another tenant's
    with pytest.raises(PermissionDeniedError):
        dev.register("x", art, signature=SIG, tenant="acme")  # only admins pick a tenant
    assert [m["name"] for m in dev.list_models()] == ["churn"]
    assert [m["name"] for m in acme.list_models()] == ["acme-churn"]
    assert [u["name"] for u in acme.models_using_view("shared_view")] == ["acme-churn"]
    assert {e["tenant"] for e in acme.events()} == {"acme"}
    admin = platform.registry
    assert {m["name"] for m in admin.list_models()} == {"churn", "acme-churn"}
    assert {u["name"] for u in admin.models_using_view("shared_view")} == {"churn", "acme-churn"}
    run = acme.start_run("acme-exp")
    with pytest.raises(PermissionDeniedError):
        dev.get_run(run)
    with pytest.raises(NotFoundError):
        dev.get_run("no-such-run")


def test_actor_trusts_the_credential_not_the_caller(platform):
    handle = ray.get_actor("registry", namespace="raymlp")
    forged = {"name": "view", "tenant": "default", "roles": ["admin"]}
    with pytest.raises(AuthenticationError):
        call(handle.command.remote(forged, "create_experiment", {"name": "e"}))
    with pytest.raises(AuthenticationError):
        call(handle.command.remote({"name": "admin"}, "create_experiment", {"name": "e"}))
    with pytest.raises(AuthenticationError):
        call(handle.query.remote({"name": "mallory", "roles": ["admin"]}, "list_models", {}))
