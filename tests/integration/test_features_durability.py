"""The feature store actor is a cache: killed (or its node lost) it comes back with every
acknowledged push; and the online store can be sharded over several actors."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import ray

from raymlp._private import cluster as cluster_lib
from raymlp.client import connect
from raymlp.config import PlatformConfig
from tests._wait import wait_for

CHURN = str(Path(__file__).resolve().parents[2] / "configs" / "features" / "churn.yaml")
NOW = datetime.now(UTC)


def usage_row(cid: str, calls: int, age_days: float = 0.0) -> dict:
    return {
        "customer_id": cid,
        "event_timestamp": NOW - timedelta(days=age_days),
        "calls_last_30d": calls,
        "data_gb_last_30d": 1.0,
        "support_tickets_90d": 0,
        "dropped_call_rate": 0.0,
    }


def online_calls(p, ids: list[str]) -> dict[str, int | None]:
    rows = p.features.get_online_features(
        [{"customer_id": i} for i in ids], ["customer_usage:calls_last_30d"]
    )
    return {r["customer_id"]: r["customer_usage__calls_last_30d"] for r in rows}


def test_acknowledged_pushes_survive_an_actor_kill_mid_stream(platform):
    fs = platform.features
    fs.apply(CHURN)
    acked: dict[str, int] = {}
    errors: list[BaseException] = []
    started = threading.Event()

    def pusher():
        try:
            for i in range(60):
                fs.push("customer_usage", [usage_row(f"c{i}", i)])
                acked[f"c{i}"] = i
                if i == 10:
                    started.set()
        except BaseException as e:  # surfaced below
            errors.append(e)
            started.set()

    t = threading.Thread(target=pusher)
    t.start()
    assert started.wait(60)
    handle = ray.get_actor("feature_store", namespace="raymlp")
    ray.kill(handle, no_restart=False)  # kill -9 mid-stream; Ray restarts it
    t.join(120)
    assert not t.is_alive() and not errors, errors
    assert len(acked) == 60
    info = ray.get(handle.info.remote())
    assert info["reconstructed"] is True
    # Definitions and every acknowledged push are back (rebuilt from storage).
    assert online_calls(platform, list(acked)) == acked
    assert fs.describe("customer_usage")["table"]["num_rows"] >= 60


@pytest.mark.multinode
def test_node_loss_rebuilds_the_online_store_on_another_node(ray_cluster, tmp_path):
    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "feature_store": {"actor": {"resources": {"fs_pin": 0.01}}},
        }
    )
    first = ray_cluster.add_node(num_cpus=1, resources={"fs_pin": 1})
    ray_cluster.wait_for_nodes()
    second = None
    try:
        p = connect(config=cfg)
        p.features.apply(CHURN)
        for i in range(5):
            p.features.push("customer_usage", [usage_row(f"n{i}", 10 + i)])
        old_node = ray.get(ray.get_actor("feature_store", namespace="raymlp").info.remote())
        assert old_node["node_id"] == first.node_id
        ray_cluster.remove_node(first, allow_graceful=False)
        second = ray_cluster.add_node(num_cpus=1, resources={"fs_pin": 1})
        ray_cluster.wait_for_nodes()
        got = wait_for(
            lambda: online_calls(p, [f"n{i}" for i in range(5)]),
            timeout=90,
            interval=0.2,
            message="online reads after the node loss",
        )
        assert got == {f"n{i}": 10 + i for i in range(5)}
        info = ray.get(ray.get_actor("feature_store", namespace="raymlp").info.remote())
        assert info["node_id"] == second.node_id and info["reconstructed"]
    finally:
        cluster_lib.remove_platform(cfg.ray.namespace, cfg)
        if second is not None:
            ray_cluster.remove_node(second, allow_graceful=False)


def test_sharded_online_store(sharded_platform):
    p = sharded_platform
    fs = p.features
    fs.apply(CHURN)
    ids = [f"s{i}" for i in range(40)]
    fs.push("customer_usage", [usage_row(cid, i) for i, cid in enumerate(ids)])
    fs.ingest("customer_usage", pd.DataFrame([usage_row("late", 7, age_days=1)]))
    fs.materialize("customer_usage")
    got = online_calls(p, [*ids, "late", "absent"])
    assert got == {**{cid: i for i, cid in enumerate(ids)}, "late": 7, "absent": None}
    held = [
        ray.get(
            ray.get_actor(f"feature_store_online_{i}", namespace="raymlp").online_stats.remote(p.caller.wire())
        )["views"]["customer_usage"]
        for i in range(2)
    ]
    assert sum(held) == 41 and min(held) > 0  # split, none holds everything
    assert fs.describe("customer_usage")["online"]["entities"] == 41

