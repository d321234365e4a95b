"""Threat: approval bypassed by traffic. A developer sets a 100 % canary of a never-approved
version, so every answer comes from it while the registry still says production is v1.

Now the registry refuses real traffic beyond ``max_unapproved_canary_weight`` (10 %) to a
version the approval policy has not approved (403 naming the rule), whether asked through the
registry SDK or ``p.serve``; a small canary and a shadow stay allowed, and an approved version
takes any weight. Auth on, two tenants, API keys."""

from __future__ import annotations

import pytest

from raymlp._private import cluster as cluster_lib
from raymlp.client import connect
from raymlp.config import PlatformConfig, hash_api_key
from raymlp.errors import PermissionDeniedError
from raymlp.serving.examples import make_artifact

KEYS = {"alice": "key-alice-4", "bob": "key-bob-4", "gina": "key-gina-4"}
SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "binary"}}
TRAFFIC = ("canary_version", "canary_weight", "shadow_version", "standby_version", "steps")


@pytest.fixture
def secured(ray_cluster, tmp_path):
    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "registry": {"approval_required": True},
            "auth": {
                "tenants": [{"name": "acme"}, {"name": "globex"}],
                "principals": [
                    {"name": n, "tenant": t, "roles": [r], "api_key_sha256": hash_api_key(KEYS[n])}
                    for n, t, r in (
                        ("alice", "acme", "developer"),
                        ("bob", "acme", "approver"),
                        ("gina", "globex", "developer"),
                    )
                ],
            },
        }
    )
    alice = connect(config=cfg, api_key=KEYS["alice"])
    yield alice, alice.as_principal(api_key=KEYS["bob"]), tmp_path
    cluster_lib.remove_platform(cfg.ray.namespace, cfg)


def _state(p):
    t = p.registry.get_traffic("churn")
    return {k: t[k] for k in TRAFFIC}


def test_a_100_percent_canary_of_an_unapproved_version_is_refused(secured):
    alice, bob, tmp = secured
    art = make_artifact(tmp / "a", seed=1)
    for _ in range(2):
        alice.registry.register("churn", art, signature=SIG)
    bob.registry.approve(alice.registry.request_promotion("churn", 1))
    before = _state(alice)
    seq = alice.registry.events()[-1]["seq"]

    with pytest.raises(PermissionDeniedError) as e:
        alice.registry.set_traffic("churn", canary_version=2, canary_weight=100)
    assert e.value.http_status == 403
    assert e.value.context["rule"] == "max_unapproved_canary_weight"
    assert "max_unapproved_canary_weight" in e.value.message
    with pytest.raises(PermissionDeniedError, match="max_unapproved_canary_weight"):
        alice.serve.canary("churn", 2, 50, wait=False)  # the serve SDK / CLI path
    # nothing changed: the same traffic state, no event, production still v1
    assert _state(alice) == before
    assert alice.registry.events()[-1]["seq"] == seq
    assert alice.registry.get("churn", alias="production").version == 1

    # how a canary starts stays allowed: 10 %, and a shadow
    out = alice.registry.set_traffic("churn", canary_version=2, canary_weight=10, shadow_version=2)
    assert (out["canary_version"], out["canary_weight"], out["shadow_version"]) == (2, 10.0, 2)
    with pytest.raises(PermissionDeniedError):  # ...but not its advance past the ceiling
        alice.registry.set_traffic("churn", canary_weight=25)
    assert alice.registry.get_traffic("churn")["canary_weight"] == 10.0

    # approved through the four-eyes path, the version takes any weight
    bob.registry.approve(alice.registry.request_promotion("churn", 2))
    alice.registry.set_stage("churn", 1, "staging")  # archived when v2 took production
    out = alice.registry.set_traffic("churn", canary_version=1, canary_weight=100)
    assert out["canary_weight"] == 100.0  # v1 held production: approved
