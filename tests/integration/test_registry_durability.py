"""Durability and concurrency of the registry actor: one winner per alias race, no acknowledged
change lost to a kill -9, and recovery on another node."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from raymlp._private import cluster as cluster_lib
from raymlp.client import connect
from raymlp.config import PlatformConfig
from raymlp.errors import ConflictError
from tests._wait import wait_for

SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}


def _artifact(tmp_path):
    d = tmp_path / "art"
    d.mkdir(exist_ok=True)
    (d / "w").write_text("w")
    return d


def _race(fns):
    barrier = threading.Barrier(len(fns))
    results: list = [None] * len(fns)

    def run(i):
        barrier.wait()
        try:
            results[i] = ("ok", fns[i]())
        except Exception as e:  # noqa: BLE001 - collected for the assertions
            results[i] = ("err", e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_promotions_of_one_alias_have_one_winner(platform, tmp_path):
    reg = platform.registry
    art = _artifact(tmp_path)
    for _ in range(4):
        reg.register("churn", art, signature=SIG)
    reg.set_alias("churn", "canary", 1)
    for round_ in range(3):
        holder = reg.get("churn", alias="canary").version
        contenders = [v for v in (1, 2, 3, 4) if v != holder]
        results = _race(
            [
                (lambda v=v, h=holder: reg.promote("churn", v, "canary", expected_version=h))
                for v in contenders
            ]
        )
        wins = [r[1] for r in results if r[0] == "ok"]
        losses = [r[1] for r in results if r[0] == "err"]
        assert len(wins) == 1, (round_, results)
        assert all(isinstance(e, ConflictError) for e in losses), losses
        assert reg.get("churn", alias="canary").version == wins[0]["version"]
    # approvals race too: two requests against the same production holder, approved at once
    bob = platform.as_principal(principal="bob").registry
    carol = platform.as_principal(principal="carol").registry
    r1 = reg.request_promotion("churn", 1)
    r2 = reg.request_promotion("churn", 2)
    results = _race([lambda: bob.approve(r1), lambda: carol.approve(r2)])
    assert sorted(r[0] for r in results) == ["err", "ok"]
    assert isinstance(next(r[1] for r in results if r[0] == "err"), ConflictError)
    moves = [e for e in reg.events(kinds=["alias_moved"]) if e["payload"]["alias"] == "production"]
    assert len(moves) == 1


def test_kill_9_mid_sequence_loses_no_acknowledged_change(platform, tmp_path):
    reg = platform.registry
    art = _artifact(tmp_path)
    run_id = reg.start_run("durability")
    acked: dict[str, list] = {"versions": [], "aliases": [], "steps": []}
    errors: list[Exception] = []
    stop = threading.Event()

    def mutate():
        i = 0
        while not stop.is_set() and i < 400:
            i += 1
            try:
                if i % 3 == 0:
                    acked["versions"].append(reg.register("churn", art, signature=SIG))
                elif i % 3 == 1 and acked["versions"]:
                    v = acked["versions"][i % len(acked["versions"])]
                    reg.set_alias("churn", "canary", v)
                    acked["aliases"].append(v)
                else:
                    reg.log_metrics(run_id, {"loss": 1.0 / i}, step=i)
                    acked["steps"].append(i)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
                return

    t = threading.Thread(target=mutate)
    t.start()
    handle = ray.get_actor("registry", namespace="raymlp")
    pid_before = ray.get(handle.info.remote())["pid"]
    for kill in range(2):
        target = 8 * (kill + 1)
        deadline = time.monotonic() + 60
        while len(acked["versions"]) < target and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.01)
        ray.kill(handle, no_restart=False)  # SIGKILL; Ray restarts it (max_restarts=-1)
    deadline = time.monotonic() + 60
    while len(acked["versions"]) < 24 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.05)
    stop.set()
    t.join(120)
    assert not errors, errors  # every call either returned or was retried to completion
    info = ray.get(handle.info.remote())
    assert info["pid"] != pid_before and info["reconstructed"]
    # every acknowledged change is there, exactly once (retries reuse their idempotency key)
    versions = [v.version for v in reg.versions("churn")]
    assert versions == sorted(acked["versions"]) == list(range(1, len(versions) + 1))
    assert reg.get("churn", alias="canary").version == acked["aliases"][-1]
    history = reg.get_run(run_id)["history"]["loss"]
    assert [s for s, _, _ in history] == acked["steps"]
    # and a fresh replay lands in exactly the same state
    before = reg.show("churn")
    ray.kill(handle, no_restart=False)
    assert reg.show("churn") == before


@pytest.mark.multinode
def test_registry_comes_back_on_another_node_with_full_state(ray_cluster, tmp_path):
    # The registry needs 1 CPU; with the head's CPUs held it can only start on the new node.
    node = ray_cluster.add_node(num_cpus=1, resources={"registry_node": 1})
    ray_cluster.wait_for_nodes()

    @ray.remote(num_cpus=1)
    class Hold:
        def ping(self):
            return 1

    holds = [Hold.options(resources={"head": 0.01}).remote() for _ in range(2)]
    ray.get([h.ping.remote() for h in holds])
    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "registry": {"actor": {"num_cpus": 1, "max_concurrency": 64}},
        }
    )
    removed = False
    try:
        p = connect(config=cfg)
        handle = ray.get_actor("registry", namespace="raymlp")
        assert ray.get(handle.info.remote())["node_id"] == node.node_id
        reg = p.registry
        art = _artifact(tmp_path)
        for _ in range(3):
            reg.register("churn", art, signature=SIG)
        reg.set_alias("churn", "canary", 2)
        rid = reg.request_promotion("churn", 3)
        before = reg.show("churn")
        for h in holds:
            ray.kill(h)
        ray_cluster.remove_node(node, allow_graceful=False)
        removed = True
        wait_for(
            lambda: not any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()),
            timeout=60,
            interval=0.2,
            message="the removed node to go dead",
        )
        assert reg.show("churn") == before  # retried until the actor is back
        info = ray.get(handle.info.remote())
        assert info["node_id"] == ray_cluster.head_node.node_id
        assert info["reconstructed"]
        p.as_principal(principal="bob").registry.approve(rid)
        assert reg.get("churn", alias="production").version == 3
    finally:
        for h in holds:
            ray.kill(h)
        if not removed:
            ray_cluster.remove_node(node, allow_graceful=False)
        cluster_lib.remove_platform(cfg.ray.namespace, cfg)
