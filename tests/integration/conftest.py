"""One local Ray cluster for the whole session, plus per-test platform fixtures.

The session cluster is a ``ray.cluster_utils.Cluster`` (a head raylet with 2 CPUs), so tests that
need several nodes add raylets to it with the ``worker_node`` fixture instead of starting a second
cluster. Every test that uses ``platform`` gets a fresh storage root and fresh platform actors;
actors and Serve applications are removed after each test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import ray
from ray.cluster_utils import Cluster

from raymlp._private import cluster as cluster_lib
from raymlp.client import Platform, connect
from raymlp.config import PlatformConfig
from tests._net import free_port

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
    cluster_lib.remove_platform(platform_config.ray.namespace, platform_config)
    _shutdown_serve()


@pytest.fixture
def worker_node(ray_cluster):
    """A second raylet (1 CPU, custom resource ``worker_node``) for multi-node tests."""
    node = ray_cluster.add_node(num_cpus=1, resources={"worker_node": 1})
    ray_cluster.wait_for_nodes()
    yield node
    ray_cluster.remove_node(node, allow_graceful=False)
