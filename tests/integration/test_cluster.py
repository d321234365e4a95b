"""The platform lifecycle on a real local cluster, and errors crossing actor boundaries."""

from __future__ import annotations

import pytest
import ray

from actors import ACTOR_SPECS
from raymlp._private import cluster
from raymlp._private.rpc import call
from raymlp.client import connect
from raymlp.config import PlatformConfig
from raymlp.errors import ConflictError, NotFoundError, ValidationError


@ray.remote
class _Failing:
    def validate(self, value):
        raise ValidationError(
            f"tenure_months must be >= 0 (got {value!r})", field="tenure_months", value=value,
            rule=">= 0",
        )

    def missing(self):
        raise NotFoundError("model 'x' does not exist", kind="model", name="x")


def test_error_round_trips_through_ray_get_with_type_and_context(ray_cluster):
    actor = _Failing.remote()
    with pytest.raises(ValidationError) as info:
        call(actor.validate.remote(-3))
    err = info.value
    assert type(err) is ValidationError
    assert err.context == {"field": "tenure_months", "value": -3, "rule": ">= 0"}
    assert err.field == "tenure_months"
    assert err.to_dict()["error"]["code"] == "validation_error"
    # Even the raw Ray error is an instance of the cause, with the context attributes.
    with pytest.raises(NotFoundError) as raw:
        ray.get(actor.missing.remote())
    assert raw.value.name == "x"


def test_up_is_idempotent_and_down_removes_everything(ray_cluster, platform_config):
    p1 = connect(config=platform_config)
    names = [n for s in ACTOR_SPECS for n in s.names(platform_config)]
    handles = {n: ray.get_actor(n, namespace="raymlp") for n in names}
    p2 = connect(config=platform_config)  # second `up`: same actors, not new ones
    for n in names:
        assert ray.get_actor(n, namespace="raymlp")._actor_id == handles[n]._actor_id
    assert p1.storage.root == p2.storage.root
    rows = {r["actor"]: r for r in p2.status()}
    for n in names:
        assert rows[n]["state"] == "ALIVE"
    assert set(rows) >= {s.name for s in ACTOR_SPECS}
    removed = cluster.remove_platform("raymlp", platform_config)
    assert set(names) <= set(removed)
    for n in names:
        with pytest.raises(ValueError):
            ray.get_actor(n, namespace="raymlp")
    assert cluster.published_config() is None


def test_up_refuses_a_second_storage_root_while_up(ray_cluster, platform_config, tmp_path):
    connect(config=platform_config)
    other = PlatformConfig.model_validate({"storage": {"root": str(tmp_path / "other")}})
    try:
        with pytest.raises(ConflictError) as info:
            connect(config=other)
        assert info.value.context["running_root"] == platform_config.storage.root
    finally:
        cluster.remove_platform("raymlp", platform_config)


def test_connect_prefers_the_published_config(ray_cluster, platform_config):
    connect(config=platform_config)
    try:
        joined = connect(create_actors=False)  # no config given: uses what `up` published
        assert joined.storage.root == platform_config.storage.root
    finally:
        cluster.remove_platform("raymlp", platform_config)
