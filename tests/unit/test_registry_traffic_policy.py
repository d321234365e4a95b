"""Traffic is a promotion: real traffic to a version the approval policy has not approved is
limited to a small canary (``max_unapproved_canary_weight``); standbys must be approved;
shadows and lowering a weight stay allowed. The commands run against a registry state directly
(plan → apply), acting as verified actors."""

from __future__ import annotations

import pytest

from raymlp.config import RegistrySettings
from raymlp.errors import PermissionDeniedError
from raymlp.registry.commands import ModelCommands, approved_for, unapproved_aliases
from raymlp.registry.rbac import Actor
from raymlp.registry.state import RegistryState
from raymlp.registry.traffic_split import TrafficCommands, traffic_view

SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "binary"}}
ALICE = Actor(name="alice", tenant="default", roles=("developer",))
BOB = Actor(name="bob", tenant="default", roles=("approver",))


class Registry:
    """Commands over one in-memory state; ``run`` applies a plan's events like the actor."""

    def __init__(self, **settings) -> None:
        self.state = RegistryState()
        self.settings = RegistrySettings.model_validate(settings)
        self.models = ModelCommands(self.state, self.settings, lambda n, v: f"/m/{n}/{v}")
        self.traffic = TrafficCommands(self.models)

    def run(self, plan):
        for i, ev in enumerate(plan.events):
            ev.seq = self.state.last_seq + 1 + i
        self.state.apply_all(plan.events)
        return plan.result

    def set_traffic(self, who=ALICE, **kw):
        return self.run(self.traffic.set_traffic(who, "churn", **kw))

    def view(self):
        return traffic_view(self.state.models["churn"])


@pytest.fixture
def reg() -> Registry:
    """churn v1 in production (approved by bob), v2 and v3 registered, never approved."""
    r = Registry(approval_required=True)
    for _ in range(3):
        r.run(r.models.register(ALICE, "churn", None, signature=SIG))
    rid = r.run(r.models.request_promotion(ALICE, "churn", 1, "production"))
    r.run(r.models.approve(BOB, rid))
    return r


def test_a_canary_up_to_the_ceiling_is_allowed_for_an_unapproved_version(reg):
    out = reg.set_traffic(canary_version=2, canary_weight=10, steps=[10, 50, 100])
    assert (out["canary_version"], out["canary_weight"]) == (2, 10.0)


@pytest.mark.parametrize("weight", [10.5, 50, 100])
def test_a_canary_above_the_ceiling_of_an_unapproved_version_is_refused(reg, weight):
    before = reg.view()
    seq = reg.state.last_seq
    with pytest.raises(PermissionDeniedError) as e:
        reg.set_traffic(canary_version=2, canary_weight=weight)
    assert e.value.http_status == 403
    assert e.value.context["rule"] == "max_unapproved_canary_weight"
    assert "max_unapproved_canary_weight" in e.value.message
    assert e.value.context["aliases"] == ["production"]
    assert e.value.context["version"] == 2
    assert reg.view() == before and reg.state.last_seq == seq  # nothing changed


def test_raising_a_small_canary_past_the_ceiling_is_refused_like_the_auto_advance(reg):
    reg.set_traffic(canary_version=2, canary_weight=5, steps=[5, 25, 50, 100])
    with pytest.raises(PermissionDeniedError, match="max_unapproved_canary_weight"):
        reg.set_traffic(canary_weight=25, reason="monitor: advance")
    assert reg.view()["canary_weight"] == 5.0


def test_approved_versions_take_any_weight_and_unapproved_ones_cannot_replace_them():
    r = Registry(approval_required=True)
    for _ in range(3):
        r.run(r.models.register(ALICE, "churn", None, signature=SIG))
    for v in (1, 2):  # v1 then v2 approved into production: v1 is in the alias's history
        r.run(r.models.approve(BOB, r.run(r.models.request_promotion(ALICE, "churn", v))))
    model = r.state.models["churn"]
    assert approved_for(r.state, model, 1, "production")  # held it before
    assert approved_for(r.state, model, 2, "production")  # holds it
    assert unapproved_aliases(r.state, r.settings, model, 3) == ["production"]
    r.run(r.models.set_stage(ALICE, "churn", 1, "staging"))  # archived when v2 took over
    assert r.set_traffic(canary_version=1, canary_weight=100)["canary_weight"] == 100.0
    with pytest.raises(PermissionDeniedError, match="version 3"):
        r.set_traffic(canary_version=3)  # the 100% weight would now go to v3
    assert r.view()["canary_version"] == 1


def test_lowering_or_clearing_a_canary_and_shadows_are_always_allowed(reg):
    reg.settings.max_unapproved_canary_weight = 100.0  # a canary that predates a lower ceiling
    reg.set_traffic(canary_version=2, canary_weight=60)
    reg.settings.max_unapproved_canary_weight = 10.0
    assert reg.set_traffic(canary_weight=30)["canary_weight"] == 30.0  # lowering: a rollback
    assert reg.set_traffic(shadow_version=3)["shadow_version"] == 3  # shadows never answer
    assert reg.set_traffic(canary_version=None)["canary_weight"] == 0.0


def test_a_standby_must_be_approved(reg):
    with pytest.raises(PermissionDeniedError) as e:
        reg.set_traffic(standby_version=3)
    assert e.value.context["rule"] == "approved_standby"
    assert reg.view()["standby_version"] is None
    assert reg.set_traffic(standby_version=1)["standby_version"] == 1  # holds production


def test_the_ceiling_is_configurable_and_models_without_approval_are_not_limited():
    r = Registry(
        approval_required=True,
        max_unapproved_canary_weight=25.0,
        approval_overrides={"free": False},
    )
    for name in ("churn", "free"):
        r.run(r.models.register(ALICE, name, None, signature=SIG))
        r.run(r.models.register(ALICE, name, None, signature=SIG))
    assert r.set_traffic(canary_version=2, canary_weight=25)["canary_weight"] == 25.0
    with pytest.raises(PermissionDeniedError):
        r.set_traffic(canary_weight=26)
    out = r.run(r.traffic.set_traffic(ALICE, "free", canary_version=2, canary_weight=100))
    assert out["canary_weight"] == 100.0


def test_promoting_an_unapproved_version_names_the_policy(reg):
    with pytest.raises(PermissionDeniedError) as e:
        reg.run(reg.models.promote(ALICE, "churn", 2, "production"))  # the blue-green switch
    assert e.value.context["rule"] == "approval_required"
    assert (e.value.context["model"], e.value.context["version"]) == ("churn", 2)
    assert reg.state.models["churn"].aliases["production"] == 1
