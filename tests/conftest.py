"""Shared test configuration: keep Ray quiet and local, one local Ray cluster for the whole
session, and per-test platform fixtures (used by tests/integration and tests/security).

The session cluster is a ``ray.cluster_utils.Cluster`` (a head raylet with 2 CPUs), so tests that
need several nodes add raylets to it with the ``worker_node`` fixture instead of starting a second
cluster. Every test that uses ``platform`` gets a fresh storage root and fresh platform actors;
actors and Serve applications are removed after each test.
"""

from __future__ import annotations

import os

# Tests never join a cluster a developer happens to have running.
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("RAYMLP_ADDRESS", None)
os.environ.pop("RAYMLP_CONFIG", None)
os.environ.pop("RAYMLP_STORAGE_ROOT", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray Train V2 is the default in 2.60; keep it explicit so behaviour doesn't drift.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


import logging  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from raymlp._private import cluster as cluster_lib  # noqa: E402
from raymlp.client import Platform, connect  # noqa: E402
from raymlp.config import PlatformConfig  # noqa: E402
from tests._net import free_port  # noqa: E402

HEAD_CPUS = 2


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": HEAD_CPUS, "include_dashboard": True,
                        "dashboard_port": free_port(),  # not 8265: another cluster may hold it
                        "resources": {"head": 1}},
    )
    ray.init(address=c.address, namespace="raymlp", logging_level=logging.WARNING)
    yield c
    ray.shutdown()
    c.shutdown()


def _shutdown_serve() -> None:
    try:
        ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    except ValueError:
        return
    from ray import serve

    serve.shutdown()


@pytest.fixture
def platform_config(tmp_path) -> PlatformConfig:
    """A PlatformConfig whose storage root is this test's temp dir."""
    return PlatformConfig.model_validate({"storage": {"root": str(tmp_path / "root")}})


@pytest.fixture
def platform(ray_cluster, platform_config) -> Iterator[Platform]:
    """The platform up on the session cluster, on a fresh storage root; torn down after."""
    p = connect(config=platform_config)
    yield p
    from raymlp.inference.pool import shutdown_pools

    shutdown_pools()  # warm predictor actors of this test's models
    cluster_lib.remove_platform(platform_config.ray.namespace, platform_config)
    _shutdown_serve()


@pytest.fixture
def worker_node(ray_cluster):
    """A second raylet (1 CPU, custom resource ``worker_node``) for multi-node tests."""
    node = ray_cluster.add_node(num_cpus=1, resources={"worker_node": 1})
    ray_cluster.wait_for_nodes()
    yield node
    ray_cluster.remove_node(node, allow_graceful=False)
