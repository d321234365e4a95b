"""Integration tests use the session cluster and platform fixtures of ``tests/conftest.py``,
and ``sharded_platform`` below."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

import actors
from raymlp._private import cluster as cluster_lib
from raymlp.client import Platform, connect
from raymlp.config import PlatformConfig


@pytest.fixture
def sharded_platform(ray_cluster, tmp_path, monkeypatch) -> Iterator[Platform]:
    """The platform with ``feature_store.online_shards: 2`` on a fresh storage root."""
    # Wire the shard instances (as actors/__init__.py does once `instance_names` is set).
    specs = tuple(
        replace(s, instance_names=actors._online_shard_names) if s.name == "feature_store" else s
        for s in actors.ACTOR_SPECS
    )
    monkeypatch.setattr(actors, "ACTOR_SPECS", specs)
    monkeypatch.setattr(cluster_lib, "ACTOR_SPECS", specs)
    cfg = PlatformConfig.model_validate(
        {"storage": {"root": str(tmp_path / "root")}, "feature_store": {"online_shards": 2}}
    )
    try:
        yield connect(config=cfg)
    finally:
        cluster_lib.remove_platform(cfg.ray.namespace, cfg)
