"""Tenant-owned feature objects in apply plans: another tenant's entity, feature view or
on-demand view cannot be changed (forced or not) or built on; admins may; nothing changes."""

from __future__ import annotations

import json

import pytest

from raymlp.config import FeatureRepo, load_config
from raymlp.errors import PermissionDeniedError
from raymlp.features.definitions import FeatureRegistry

ENTITY = {"name": "customer", "join_keys": ["customer_id"]}
VIEW = {
    "name": "profile",
    "entities": ["customer"],
    "schema": [{"name": "tenure", "dtype": "int64"}],
}
ODFV = {
    "name": "ratios",
    "sources": ["profile:tenure"],
    "udf": "raymlp.features.examples:charges_per_tenure",
    "schema": [{"name": "r", "dtype": "float64"}],
}


def repo(entities=(), views=(), odfvs=()) -> FeatureRepo:
    return load_config(
        FeatureRepo,
        {
            "entities": list(entities),
            "feature_views": list(views),
            "on_demand_feature_views": list(odfvs),
        },
    )


@pytest.fixture
def reg_a() -> FeatureRegistry:
    """A registry where tenant ``a`` owns the entity, a view and an on-demand view."""
    plan = FeatureRegistry().plan_apply(
        repo([ENTITY], [VIEW], [ODFV]), applied_by="alice", tenant="a", now=1.0
    )
    return plan.registry


def _snapshot(reg: FeatureRegistry) -> str:
    return json.dumps(reg.to_dict(), sort_keys=True)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize(
    ("what", "kind", "changed"),
    [
        ("customer", "entity", repo([{**ENTITY, "join_keys": ["cid"]}])),
        ("customer", "entity", repo([{**ENTITY, "description": "mine now"}])),
        (
            "profile",
            "feature_view",
            repo([], [{**VIEW, "schema": [{"name": "t", "dtype": "bool"}]}]),
        ),
        ("profile", "feature_view", repo([], [{**VIEW, "description": "x"}])),
        ("ratios", "on_demand_feature_view", repo([], [], [{**ODFV, "description": "x"}])),
    ],
)
def test_another_tenant_cannot_change_an_owned_object(reg_a, what, kind, changed, force):
    before = _snapshot(reg_a)
    with pytest.raises(PermissionDeniedError) as err:
        reg_a.plan_apply(changed, force=force, applied_by="bob", tenant="b", now=2.0)
    e = err.value
    assert "belongs to tenant 'a'" in e.message and "rule:" in e.message
    assert (e.owner_tenant, e.tenant, e.kind, e.name) == ("a", "b", kind, what)
    assert e.rule == "tenant-owned" and e.principal == "bob"
    assert _snapshot(reg_a) == before  # the registry itself is never changed by a plan


def test_forced_entity_key_change_cannot_replace_another_tenants_view(reg_a):
    # An admin let tenant b build a view on a's entity; a's forced key change would empty it.
    b_view = {**VIEW, "name": "usage"}
    reg = reg_a.plan_apply(
        repo([], [b_view]), applied_by="root", tenant="b", admin=True, now=2.0
    ).registry
    assert reg.tenant_of("feature_view", "usage") == "b"
    with pytest.raises(PermissionDeniedError, match="'usage' belongs to tenant 'b'"):
        reg.plan_apply(
            repo([{**ENTITY, "join_keys": ["cid"]}], [VIEW]),
            force=True,
            applied_by="alice",
            tenant="a",
            now=3.0,
        )


def test_another_tenant_cannot_build_on_owned_objects(reg_a):
    with pytest.raises(PermissionDeniedError, match="entity 'customer' belongs to tenant 'a'"):
        reg_a.plan_apply(repo([], [{**VIEW, "name": "mine"}]), applied_by="bob", tenant="b")
    with pytest.raises(PermissionDeniedError, match="feature view 'profile' belongs"):
        reg_a.plan_apply(repo([], [], [{**ODFV, "name": "peek"}]), applied_by="bob", tenant="b")


def test_unchanged_reapply_owner_changes_and_admin_changes_are_allowed(reg_a):
    # Re-applying the identical entity changes nothing, so it is not refused.
    plan = reg_a.plan_apply(repo([ENTITY]), applied_by="bob", tenant="b", force=True)
    assert [c.action for c in plan.changes] == ["unchanged"] and not plan.changed
    own = reg_a.plan_apply(repo([{**ENTITY, "description": "d"}]), applied_by="alice", tenant="a")
    assert own.changes[0].action == "updated"
    admin = reg_a.plan_apply(
        repo([{**ENTITY, "description": "d"}], [], [{**ODFV, "description": "d"}]),
        applied_by="root",
        tenant="default",
        admin=True,
    )
    assert [c.action for c in admin.changes] == ["updated", "updated"]
    # Ownership stays with the creating tenant, whoever changes it.
    assert admin.registry.tenant_of("entity", "customer") == "a"


def test_sensitive_toggles_are_incompatible_changes(reg_a):
    from raymlp.errors import ConflictError

    with pytest.raises(ConflictError, match="sensitive"):
        reg_a.plan_apply(repo([{**ENTITY, "sensitive": True}]), applied_by="alice", tenant="a")
    feat = {
        **VIEW,
        "schema": [{"name": "tenure", "dtype": "int64"}, {"name": "s", "dtype": "string"}],
    }
    reg = reg_a.plan_apply(repo([], [feat]), applied_by="alice", tenant="a").registry
    marked = {
        **feat,
        "schema": [feat["schema"][0], {"name": "s", "dtype": "string", "sensitive": True}],
    }
    with pytest.raises(ConflictError, match="'s' sensitive False -> True"):
        reg.plan_apply(repo([], [marked]), applied_by="alice", tenant="a")
    forced = reg.plan_apply(repo([], [marked]), applied_by="alice", tenant="a", force=True)
    assert forced.changes[0].action == "replaced" and forced.changes[0].table_op == "replace"
    assert forced.registry.sensitive_columns("profile") == ["s"]
