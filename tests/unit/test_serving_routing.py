"""Canary routing: the split honours the weight, is sticky per entity, and only moves entities
from stable to canary when the weight grows."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from raymlp.serving.routing import ModelRoute, Traffic, VersionInfo, bucket, choose

STABLE = VersionInfo("churn", 3)
CANARY = VersionInfo("churn", 4)


def route(weight: float, canary: VersionInfo | None = CANARY) -> ModelRoute:
    return ModelRoute(name="churn", stable=STABLE, canary=canary, canary_weight=weight)


def share(weight: float, n: int = 2000) -> float:
    r = route(weight)
    return sum(choose(r, f"customer-{i}")[1] == "canary" for i in range(n)) / n


def test_split_within_5_points_of_the_weight_over_2000_entities():
    for weight in (5, 10, 25, 50, 90):
        assert abs(share(weight) * 100 - weight) <= 5, weight


def test_sticky_per_entity():
    r = route(30)
    first = {k: choose(r, k)[0].version for k in (f"c{i}" for i in range(500))}
    for _ in range(3):
        assert {k: choose(r, k)[0].version for k in first} == first


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 100), st.floats(0, 100))
def test_raising_the_weight_never_moves_a_canary_entity_back(w1, w2):
    lo, hi = sorted((w1, w2))
    keys = [f"e{i}" for i in range(300)]
    at_lo = {k for k in keys if choose(route(lo), k)[1] == "canary"}
    at_hi = {k for k in keys if choose(route(hi), k)[1] == "canary"}
    assert at_lo <= at_hi


def test_edges_and_labels():
    assert choose(route(0), "x") == (STABLE, "primary")
    assert choose(route(100), "x") == (CANARY, "canary")
    assert choose(route(50, canary=None), "x") == (STABLE, "primary")
    same = ModelRoute(name="churn", stable=STABLE, canary=STABLE, canary_weight=50)
    assert choose(same, "x") == (STABLE, "primary")
    empty = ModelRoute(name="churn")
    assert choose(empty, "x") == (None, "primary")


def test_without_a_key_the_draw_is_random_but_weighted():
    r = route(20)
    rng = random.Random(7)
    n = 4000
    hits = sum(choose(r, None, rng)[1] == "canary" for _ in range(n))
    assert abs(hits / n - 0.20) < 0.03


def test_a_new_canary_version_draws_a_fresh_sample():
    a = {f"k{i}" for i in range(2000) if bucket("churn", 4, f"k{i}") < 1000}
    b = {f"k{i}" for i in range(2000) if bucket("churn", 5, f"k{i}") < 1000}
    assert a != b and abs(len(a) - len(b)) < 100


def test_traffic_and_version_info_from_registry_shapes():
    t = Traffic.from_dict(
        {
            "canary_version": "4",
            "canary_weight": 12.5,
            "shadow_version": None,
            "standby_version": 2,
            "steps": [5, 25],
        }
    )
    assert (t.canary_version, t.canary_weight, t.standby_version, t.steps) == (
        4,
        12.5,
        2,
        (5.0, 25.0),
    )
    assert Traffic.from_dict(None) == Traffic()
    vi = VersionInfo.from_model_version(
        {
            "name": "churn",
            "version": 2,
            "tenant": "acme",
            "signature": {
                "inputs": [{"name": "x", "dtype": "float64"}],
                "output": {"name": "y", "kind": "binary"},
            },
            "lineage": {"fallback_model": {"name": "churn-fb", "version": 1}},
        }
    )
    assert vi.model_id == "churn:2" and vi.tenant == "acme"
    assert vi.signature.feature_names == ["x"]
    assert vi.lineage_fallback == {"name": "churn-fb", "version": 1}
    d = route(10).describe()
    assert d["stable_version"] == 3 and d["canary"] == {"version": 4, "weight": 10}
