"""Threat: a caller claims to be someone else (issue 13 items 2 and 3).

Auth on, two tenants, API keys for people and a keyless service principal. Every attack goes
through a public surface (the SDK, a raw actor handle from this driver, the cluster KV) and
asserts both the refusal and that the registry did not change.
"""

from __future__ import annotations

import pytest
import ray

from raymlp._private import cluster as cluster_lib
from raymlp._private.credentials import Caller, mint_token
from raymlp._private.rpc import call
from raymlp.client import Platform, connect
from raymlp.config import PlatformConfig, hash_api_key
from raymlp.errors import AuthenticationError, PermissionDeniedError

SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}
KEYS = {"alice": "alice-key", "bob": "bob-key", "carol": "carol-key", "viewer": "viewer-key"}


@pytest.fixture
def platform_config(tmp_path) -> PlatformConfig:
    return PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "auth": {
                "tenants": [{"name": "default"}, {"name": "acme"}],
                "principals": [
                    {
                        "name": "alice",
                        "roles": ["developer"],
                        "api_key_sha256": hash_api_key(KEYS["alice"]),
                    },
                    {
                        "name": "bob",
                        "roles": ["approver"],
                        "api_key_sha256": hash_api_key(KEYS["bob"]),
                    },
                    {
                        "name": "carol",
                        "tenant": "acme",
                        "roles": ["developer", "approver"],
                        "api_key_sha256": hash_api_key(KEYS["carol"]),
                    },
                    {
                        "name": "viewer",
                        "roles": ["viewer"],
                        "api_key_sha256": hash_api_key(KEYS["viewer"]),
                    },
                    {"name": "monitor", "roles": ["developer"]},
                    {"name": "ops", "roles": ["admin"]},
                ],
                "default_principal": "ops",
            },
        }
    )


@pytest.fixture
def alice(platform, tmp_path):
    """alice's session, with one registered version and her pending promotion request."""
    art = tmp_path / "m"
    art.mkdir()
    (art / "w").write_text("w")
    a = platform.as_principal(api_key=KEYS["alice"])
    v = a.registry.register("churn", art, signature=SIG)
    rid = a.registry.request_promotion("churn", v, reason="ship it")
    return a, rid


def _pending(p: Platform, rid: str) -> bool:
    return any(r["id"] == rid for r in p.registry.requests("churn"))


def _no_production(p: Platform) -> bool:
    return not p.registry.show("churn").get("aliases", {}).get("production")


def test_a_principal_record_built_in_a_driver_cannot_approve(alice):
    a, rid = alice
    bob_record = a.config.auth.by_name("bob")
    # The attack of the issue: Platform(config, config.auth.by_name("bob")) in alice's driver.
    with pytest.raises(TypeError, match="proves nothing"):
        Platform(a.config, bob_record)  # type: ignore[arg-type]
    # A Caller with bob's record but no key: the registry actor refuses it.
    forged = Platform(a.config, Caller(bob_record))
    with pytest.raises(AuthenticationError, match="no credential"):
        forged.registry.approve(rid)
    # By name through the SDK: bob has a key, so his name is never enough.
    with pytest.raises(AuthenticationError, match="authenticate with it"):
        a.as_principal(principal="bob")
    # A guessed key.
    with pytest.raises(AuthenticationError):
        a.as_principal(api_key="bob-kee")
    assert _pending(a, rid) and _no_production(a)


def test_a_raw_actor_handle_with_claimed_roles_is_refused(alice):
    a, rid = alice
    handle = ray.get_actor("registry", namespace="raymlp")
    for claim in (
        {"name": "bob", "roles": ["approver", "admin"], "tenant": "default"},
        {"name": "bob"},
        {},
        None,
        # alice's real key, but a claim to be bob: the key decides, and alice requested it.
        {"name": "bob", "api_key": KEYS["alice"]},
    ):
        with pytest.raises((AuthenticationError, PermissionDeniedError)):
            call(handle.command.remote(claim, "approve", {"request_id": rid}, "op-x"))
    # A service token for bob (who has a key), or one signed with a guessed secret.
    for token in (mint_token(b"guess", "ops", 60),):
        with pytest.raises(AuthenticationError, match="signature"):
            call(handle.command.remote({"token": token}, "approve", {"request_id": rid}, "op-y"))
    assert _pending(a, rid) and _no_production(a)


def test_four_eyes_compare_authenticated_identities(alice):
    a, rid = alice
    with pytest.raises(PermissionDeniedError) as e:
        a.registry.approve(rid)  # alice is no approver
    assert e.value.required_role == "approver"
    carol = a.as_principal(api_key=KEYS["carol"])  # an approver, but of another tenant
    with pytest.raises(PermissionDeniedError) as e:
        carol.registry.approve(rid)
    assert e.value.rule == "tenant isolation"
    viewer = a.as_principal(api_key=KEYS["viewer"])
    with pytest.raises(PermissionDeniedError):
        viewer.registry.approve(rid)
    assert _pending(a, rid) and _no_production(a)
    bob = a.as_principal(api_key=KEYS["bob"])
    bob.registry.approve(rid, comment="four eyes")
    assert a.registry.get("churn", alias="production").version == 1
    (ev,) = [e for e in a.registry.events() if e["kind"] == "promotion_approved"]
    assert ev["principal"] == "bob"


def test_a_rewritten_cluster_kv_adds_no_principal(alice, platform_config):
    a, rid = alice
    data = platform_config.model_dump(mode="json")
    data["auth"]["principals"].append(
        {"name": "mallory", "roles": ["admin"], "api_key_sha256": hash_api_key("mallory-key")}
    )
    cluster_lib._publish_config(PlatformConfig.model_validate(data))  # what any driver can do
    # The running actors keep the config `raymlp up` gave them ...
    handle = ray.get_actor("registry", namespace="raymlp")
    with pytest.raises(AuthenticationError, match="not known"):
        call(
            handle.command.remote(
                {"name": "mallory", "api_key": "mallory-key"},
                "approve",
                {"request_id": rid},
                "op-z",
            )
        )
    # ... and so does a driver that joins: connect() takes the actors' config, not the KV's.
    with pytest.raises(AuthenticationError, match="not known"):
        connect(config=platform_config, api_key="mallory-key")
    assert _pending(a, rid) and _no_production(a)
    # Serve replicas read the config from the registry actor as well.
    served = PlatformConfig.model_validate(call(handle.platform_config.remote()))
    assert served.auth.by_name("mallory") is None
