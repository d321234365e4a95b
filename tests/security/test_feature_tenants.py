"""Threat: another tenant changes a tenant's shared feature objects (issue 13 item 5).

The issue: "another tenant's developer can force-change a shared entity and so empty other
tenants' feature tables". Entities, feature views and on-demand views are tenant-owned: carol
(tenant ``acme``, developer) attacks alice's (tenant ``default``) objects through the SDK with
``force=True``; each attempt is refused naming the owner tenant and the rule, and alice's
definitions, tables and online values are exactly as before.
"""

from __future__ import annotations

import json

import pytest

from raymlp.errors import PermissionDeniedError
from tests.security._features import REPO, as_, auth_config, online, parquet_files, usage_rows


@pytest.fixture
def platform_config(tmp_path):
    return auth_config(str(tmp_path / "root"))


@pytest.fixture
def alice(platform):
    a = as_(platform, "alice")
    a.features.apply(REPO)
    a.features.push("usage", usage_rows([("c1", 1, 10, 50.0), ("c2", 2, 4, 8.0)]))
    return a


def _state(p):
    fs = p.features
    return (
        json.dumps(fs.registry().to_dict(), sort_keys=True),
        fs.table_versions(["usage"]),
        parquet_files(p, "usage"),
        online(p, ["c1", "c2"]),
    )


def test_another_tenant_cannot_force_change_an_entity_and_empty_its_tables(platform, alice):
    carol = as_(platform, "carol")
    before = _state(alice)
    assert before[3] == [("c1", 10, "present"), ("c2", 4, "present")]
    attacks = {
        # new join keys, forced: would replace (empty) alice's view `usage`
        "entity keys": {"entities": [{"name": "customer", "join_keys": ["account_id"]}]},
        # any other change to the entity
        "entity text": {
            "entities": [{"name": "customer", "join_keys": ["customer_id"], "description": "x"}]
        },
        # a forced incompatible change of the view itself
        "view dtype": {
            "entities": REPO["entities"],
            "feature_views": [
                {**REPO["feature_views"][0], "schema": [{"name": "calls", "dtype": "string"}]}
            ],
        },
        # the on-demand view, redefined on carol's terms
        "on-demand view": {
            "on_demand_feature_views": [{**REPO["on_demand_feature_views"][0], "owner": "carol"}]
        },
    }
    for what, repo in attacks.items():
        with pytest.raises(PermissionDeniedError) as err:
            carol.features.apply(repo, force=True)
        e = err.value
        assert "belongs to tenant 'default'" in e.message and "rule:" in e.message, what
        assert (e.owner_tenant, e.rule) == ("default", "tenant-owned"), what
    # Building on alice's objects is refused too: carol's view on alice's entity, carol's
    # on-demand view reading alice's features.
    with pytest.raises(PermissionDeniedError, match="entity 'customer' belongs to tenant"):
        carol.features.apply(
            {"feature_views": [{**REPO["feature_views"][0], "name": "carols_usage"}]}
        )
    with pytest.raises(PermissionDeniedError, match="'usage' belongs to tenant 'default'"):
        carol.features.apply(
            {"on_demand_feature_views": [{**REPO["on_demand_feature_views"][0], "name": "peek"}]}
        )
    # Nothing changed: definitions, Delta table, data files, online values.
    assert _state(alice) == before
    assert alice.features.registry().names("feature_view") == ["usage"]


def test_an_admin_may_change_another_tenants_entity(platform, alice):
    admin = platform  # ops: an admin service principal
    changes = admin.features.apply(
        {"entities": [{**REPO["entities"][0], "description": "reviewed by ops"}]}
    )
    assert [(c["name"], c["action"]) for c in changes] == [("customer", "updated")]
    rec = alice.features.registry().record("entity", "customer")
    assert rec["tenant"] == "default" and rec["applied_by"] == "ops"
