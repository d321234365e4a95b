"""Feature definitions: YAML models, apply plans with versions, compatibility, refs, storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from raymlp.config import (
    Entity,
    FeatureField,
    FeatureRepo,
    FeatureView,
    OnDemandFeatureView,
    load_config,
    load_config_file,
)
from raymlp.errors import ConfigError, ConflictError, NotFoundError, ValidationError
from raymlp.features.definitions import FeatureRegistry, load_registry, parse_ref, save_registry
from raymlp.storage import Storage

REPO = Path(__file__).resolve().parents[2]
CHURN = REPO / "configs" / "features" / "churn.yaml"


def repo(**view_overrides) -> FeatureRepo:
    view = {
        "name": "profile",
        "entities": ["customer"],
        "ttl": "30d",
        "schema": [{"name": "tenure", "dtype": "int64"}, {"name": "charges", "dtype": "float64"}],
    }
    view.update(view_overrides)
    return load_config(
        FeatureRepo,
        {
            "entities": [{"name": "customer", "join_keys": ["customer_id"]}],
            "feature_views": [view],
        },
    )


def test_churn_example_loads_with_two_views_of_different_ttl_and_an_on_demand_view():
    r = load_config_file(FeatureRepo, CHURN)
    ttls = {v.name: v.ttl.days for v in r.feature_views}
    assert ttls == {"customer_profile": 30, "customer_usage": 7}
    assert r.entities[0].join_keys == ["customer_id"]
    assert r.on_demand_feature_views[0].udf == "raymlp.features.examples:charges_per_tenure"


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"ttl": "-1d"}, "ttl", "not understood"),
        ({"schema": [{"name": "x", "dtype": "int65"}]}, "dtype", "int65"),
        ({"schema": [{"name": "_seq", "dtype": "int64"}]}, "name", "not a valid column"),
        ({"schema": [{"name": "a__b", "dtype": "int64"}]}, "name", "no '__'"),
        (
            {"schema": [{"name": "a", "dtype": "int64"}, {"name": "a", "dtype": "bool"}]},
            "feature_views.0",
            "more than once",
        ),
        ({"name": "Bad Name"}, "name", "not valid"),
        ({"schema": []}, "schema", "at least 1"),
        ({"colour": "red"}, "colour", "unknown key"),
    ],
)
def test_bad_view_definitions_name_the_field_and_rule(patch, field, words):
    with pytest.raises(ConfigError) as info:
        repo(**patch)
    assert field in str(info.value) and words in str(info.value)


def test_on_demand_view_validates_sources_and_udf_path():
    with pytest.raises(ValueError, match="view:feature"):
        OnDemandFeatureView(
            name="x",
            sources=["nocolon"],
            udf="m:f",
            features=[FeatureField(name="y", dtype="float64")],
        )
    with pytest.raises(ValueError, match="import path"):
        OnDemandFeatureView(
            name="x",
            sources=["a:b"],
            udf="not a path",
            features=[FeatureField(name="y", dtype="float64")],
        )


def test_apply_records_versions_and_is_idempotent():
    reg = FeatureRegistry()
    plan = reg.plan_apply(repo(), applied_by="alice")
    assert {(c.kind, c.action, c.version) for c in plan.changes} == {
        ("entity", "created", 1),
        ("feature_view", "created", 1),
    }
    assert plan.changes[1].table_op == "create"
    reg = plan.registry
    assert reg.serial == 1
    again = reg.plan_apply(repo(), applied_by="alice")
    assert not again.changed and again.registry.serial == 1
    changed = reg.plan_apply(repo(ttl="7d", description="now weekly"), applied_by="bob")
    ch = changed.changes[1]
    assert (ch.action, ch.version, ch.table_op) == ("updated", 2, None)
    assert "ttl" in ch.detail
    rec = changed.registry.record("feature_view", "profile")
    assert [h["version"] for h in rec["history"]] == [1, 2]
    assert rec["applied_by"] == "bob" and changed.registry.view("profile").ttl.days == 7


def test_adding_a_feature_is_compatible_and_adds_a_column():
    reg = FeatureRegistry().plan_apply(repo()).registry
    schema = [
        {"name": "tenure", "dtype": "int64"},
        {"name": "charges", "dtype": "float64"},
        {"name": "plan", "dtype": "string"},
    ]
    ch = reg.plan_apply(repo(schema=schema)).changes[1]
    assert ch.table_op == "add_columns" and ch.new_columns == [("plan", "string")]


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        (
            {
                "schema": [
                    {"name": "tenure", "dtype": "string"},
                    {"name": "charges", "dtype": "float64"},
                ]
            },
            "dtype int64 -> string",
        ),
        ({"timestamp_field": "ts"}, "timestamp_field"),
    ],
)
def test_incompatible_changes_are_refused_unless_forced(patch, words):
    reg = FeatureRegistry().plan_apply(repo()).registry
    with pytest.raises(ConflictError) as info:
        reg.plan_apply(repo(**patch))
    assert words in str(info.value) and "--force" in str(info.value)
    forced = reg.plan_apply(repo(**patch), force=True)
    ch = forced.changes[1]
    assert (ch.action, ch.table_op, ch.version) == ("replaced", "replace", 2)


def test_re_adding_a_removed_feature_with_another_dtype_is_caught_from_the_table():
    reg = FeatureRegistry().plan_apply(repo(schema=[{"name": "tenure", "dtype": "int64"}])).registry
    with pytest.raises(ConflictError):
        reg.plan_apply(
            repo(
                schema=[
                    {"name": "tenure", "dtype": "int64"},
                    {"name": "charges", "dtype": "string"},
                ]
            ),
            table_schemas={"profile": {"tenure": "int64", "charges": "float64"}},
        )


def test_changing_an_entitys_keys_breaks_its_views():
    reg = FeatureRegistry().plan_apply(repo()).registry
    new_ent = FeatureRepo(entities=[Entity(name="customer", join_keys=["cid"])])
    with pytest.raises(ConflictError, match="breaks views"):
        reg.plan_apply(new_ent)


def test_unknown_entity_and_on_demand_sources_are_refused():
    with pytest.raises(NotFoundError, match="entity 'nobody'"):
        FeatureRegistry().plan_apply(
            load_config(
                FeatureRepo,
                {
                    "feature_views": [
                        {
                            "name": "v",
                            "entities": ["nobody"],
                            "schema": [{"name": "a", "dtype": "int64"}],
                        }
                    ]
                },
            )
        )
    reg = FeatureRegistry().plan_apply(repo()).registry
    bad = FeatureRepo(
        on_demand_feature_views=[
            OnDemandFeatureView(
                name="od",
                sources=["profile:missing"],
                udf="m:f",
                features=[FeatureField(name="y", dtype="float64")],
            )
        ]
    )
    with pytest.raises(NotFoundError, match="missing"):
        reg.plan_apply(bad)


def test_plan_retrieval_resolves_refs_wildcards_and_on_demand_inputs():
    reg = FeatureRegistry().plan_apply(load_config_file(FeatureRepo, CHURN)).registry
    plan = reg.plan_retrieval(
        ["customer_usage:calls_last_30d", "customer_ratios:charges_per_tenure"]
    )
    assert plan.views == {
        "customer_usage": ["calls_last_30d"],
        "customer_profile": ["monthly_charges", "tenure_months"],
    }
    assert plan.output_columns == [
        "customer_usage__calls_last_30d",
        "customer_ratios__charges_per_tenure",
    ]
    assert set(plan.hidden_columns) == {
        "customer_profile__monthly_charges",
        "customer_profile__tenure_months",
    }
    assert [f.name for f in plan.request_fields] == ["requested_discount"]
    star = reg.plan_retrieval(["customer_usage:*"])
    assert len(star.output_columns) == 4
    with pytest.raises(NotFoundError):
        reg.plan_retrieval(["customer_usage:nope"])
    with pytest.raises(NotFoundError):
        reg.plan_retrieval(["nope:x"])
    with pytest.raises(ValidationError):
        reg.plan_retrieval(["no-colon"])
    with pytest.raises(ValidationError, match="twice"):
        reg.plan_retrieval(["customer_usage:calls_last_30d", "customer_usage:calls_last_30d"])


def test_parse_ref():
    assert parse_ref("v:f").column == "v__f"
    with pytest.raises(ValidationError):
        parse_ref(":f")


def test_registry_snapshots_round_trip_and_newest_wins(tmp_path):
    storage = Storage(str(tmp_path))
    assert load_registry(storage).serial == 0
    reg = FeatureRegistry().plan_apply(repo()).registry
    save_registry(storage, reg)
    reg2 = reg.plan_apply(repo(ttl="1d")).registry
    save_registry(storage, reg2)
    storage.write_bytes("features/_registry/registry-99999999.json", b"{torn")  # torn write
    loaded = load_registry(storage)
    assert loaded.serial == 2 and loaded.view("profile").ttl.days == 1
    assert loaded.key_columns("profile") == [("customer_id", "string")]


def test_python_objects_equal_yaml():
    from_yaml = repo()
    obj = FeatureView(
        name="profile",
        entities=["customer"],
        ttl="30d",
        features=[
            FeatureField(name="tenure", dtype="int64"),
            FeatureField(name="charges", dtype="float64"),
        ],
    )
    assert obj == from_yaml.feature_views[0]
