"""The replicas' online-feature near-cache (``feature_store.near_cache``) against the actor.

Each test reads through a near-cache (``OnlineLookup(..., near_cache=True)``, what a ModelServer
replica uses) and directly from the actor, on a real platform, and compares: the same rows and
statuses, repeated entities answered without an actor call, an acknowledged push seen by the
next read, TTL expiry without any event, the memory bound, a restarted actor, shards.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ray

from raymlp._private.online_lookup import OnlineLookup
from raymlp.features.online_changes import ChangeLog
from tests._wait import wait_for

REPO = Path(__file__).resolve().parents[2]
CHURN = str(REPO / "configs" / "features" / "churn.yaml")
FEATURES = ["customer_usage:calls_last_30d", "customer_usage:data_gb_last_30d",
            "customer_profile:tenure_months"]
USAGE_TTL = timedelta(days=7)  # configs/features/churn.yaml


def usage_row(cid: str, calls: int, at: datetime | None = None) -> dict:
    return {
        "customer_id": cid,
        "event_timestamp": at or datetime.now(UTC),
        "calls_last_30d": calls,
        "data_gb_last_30d": calls / 10,
        "support_tickets_90d": 0,
        "dropped_call_rate": 0.0,
    }


def both(p, cached: OnlineLookup, ids: list[str]) -> tuple[list[dict], list[dict]]:
    rows = [{"customer_id": i} for i in ids]
    return cached.get_online_features(rows, FEATURES), p.features.get_online_features(
        rows, FEATURES
    )


def near(p) -> OnlineLookup:
    lookup = OnlineLookup.from_config(p.config, p.caller, near_cache=True)
    assert lookup.cache is not None
    wait_for(lambda: all(lookup.cache.stats()["leased"]), timeout=30, message="a lease")
    return lookup


def test_answers_like_the_actor_and_repeats_need_no_call(platform):
    p = platform
    p.features.apply(CHURN)
    p.features.push("customer_usage", [usage_row(f"c{i}", i) for i in range(20)])
    lookup = near(p)
    try:
        ids = [f"c{i}" for i in range(20)] + ["nobody"]
        first, truth = both(p, lookup, ids)
        assert first == truth
        assert truth[-1]["_status"]["customer_usage__calls_last_30d"] == "not_found"
        misses = lookup.cache.stats()["misses"]
        again, truth = both(p, lookup, ids)
        assert again == truth
        st = lookup.cache.stats()
        assert st["misses"] == misses  # every entity (the unknown one too) from the cache
        assert st["hits"] >= 2 * len(ids) and st["bytes"] > 0
    finally:
        lookup.close()


def test_an_acknowledged_push_is_seen_by_the_next_read(platform):
    p = platform
    p.features.apply(CHURN)
    p.features.push("customer_usage", [usage_row(f"c{i}", 0) for i in range(5)])
    lookup = near(p)
    try:
        rng = random.Random(7)
        for step in range(25):
            cid = f"c{rng.randrange(6)}"  # c5 starts unknown: a cached not_found is dropped too
            value = 100 + step
            both(p, lookup, [cid])  # cached before the write
            p.features.push("customer_usage", [usage_row(cid, value)])
            got, truth = both(p, lookup, [cid])
            assert got == truth
            assert got[0]["customer_usage__calls_last_30d"] == value, (step, got)
        assert lookup.cache.stats()["invalidations"] >= 20
        # concurrent writers and readers: whatever a read returns is what the actor held at
        # some moment, and after the writers stop every read equals the actor's
        stop = threading.Event()

        def writer(k: int) -> None:
            for j in range(15):
                p.features.push("customer_usage", [usage_row(f"c{(k + j) % 5}", 1000 * k + j)])
            stop.set()

        threads = [threading.Thread(target=writer, args=(k,)) for k in (1, 2)]
        for t in threads:
            t.start()
        while not stop.is_set():
            lookup.get_online_features([{"customer_id": f"c{i}"} for i in range(5)], FEATURES)
        for t in threads:
            t.join()
        got, truth = both(p, lookup, [f"c{i}" for i in range(6)])
        assert got == truth
    finally:
        lookup.close()


def test_a_cached_row_expires_by_its_ttl_without_any_event(platform):
    p = platform
    p.features.apply(CHURN)
    # present now, past the view's TTL in ~2 s
    at = datetime.now(UTC) - USAGE_TTL + timedelta(seconds=2)
    p.features.push("customer_usage", [usage_row("old", 5, at)])
    lookup = near(p)
    try:
        got, truth = both(p, lookup, ["old"])
        assert got == truth and got[0]["customer_usage__calls_last_30d"] == 5
        misses = lookup.cache.stats()["misses"]
        got = wait_for(
            lambda: (r := lookup.get_online_features([{"customer_id": "old"}], FEATURES))[0][
                "_status"]["customer_usage__calls_last_30d"] == "expired" and r,
            timeout=30, interval=0.2, message="the cached row expired",
        )
        assert got[0]["customer_usage__calls_last_30d"] is None
        assert lookup.cache.stats()["misses"] == misses  # expired inside the cache
        assert got == p.features.get_online_features([{"customer_id": "old"}], FEATURES)
    finally:
        lookup.close()


def test_memory_is_bounded_by_bytes_least_recent_out(platform):
    p = platform
    p.features.apply(CHURN)
    p.features.push("customer_usage", [usage_row(f"c{i}", i) for i in range(300)])
    lookup = near(p)
    try:
        lookup.cache.max_bytes = 40_000
        ids = [f"c{i}" for i in range(300)]
        for start in range(0, 300, 50):
            got, truth = both(p, lookup, ids[start:start + 50])
            assert got == truth
        st = lookup.cache.stats()
        assert 0 < st["bytes"] <= 40_000 and st["evictions"] > 0
        # the most recent entities stayed, the first ones went
        misses = st["misses"]
        lookup.get_online_features([{"customer_id": "c299"}], FEATURES)
        assert lookup.cache.stats()["misses"] == misses
        lookup.get_online_features([{"customer_id": "c0"}], FEATURES)
        assert lookup.cache.stats()["misses"] > misses
    finally:
        lookup.close()


def test_a_restarted_feature_store_resyncs_the_cache(platform):
    p = platform
    p.features.apply(CHURN)
    p.features.push("customer_usage", [usage_row(f"c{i}", i) for i in range(5)])
    lookup = near(p)
    try:
        ids = [f"c{i}" for i in range(5)]
        both(p, lookup, ids)
        resyncs = lookup.cache.stats()["resyncs"]
        ray.kill(ray.get_actor("feature_store", namespace=p.config.ray.namespace),
                 no_restart=False)
        wait_for(lambda: lookup.cache.stats()["resyncs"] > resyncs and all(
            lookup.cache.stats()["leased"]), timeout=60, interval=0.2,
            message="the cache resynchronised with the restarted actor")
        assert lookup.cache.stats()["entries"] == 0  # cleared, not trusted across the restart
        p.features.push("customer_usage", [usage_row("c1", 77)])
        got, truth = both(p, lookup, ids)
        assert got == truth and got[1]["customer_usage__calls_last_30d"] == 77
    finally:
        lookup.close()


def test_sharded_store(sharded_platform):
    p = sharded_platform
    p.features.apply(CHURN)
    ids = [f"s{i}" for i in range(30)]
    p.features.push("customer_usage", [usage_row(cid, i) for i, cid in enumerate(ids)])
    lookup = near(p)
    assert len(lookup.cache.stats()["leased"]) == 3  # feature_store + 2 shards
    try:
        first, truth = both(p, lookup, [*ids, "absent"])
        assert first == truth
        misses = lookup.cache.stats()["misses"]
        assert both(p, lookup, [*ids, "absent"])[0] == truth
        assert lookup.cache.stats()["misses"] == misses
        for cid in ("s3", "s17", "absent"):
            p.features.push("customer_usage", [usage_row(cid, 500)])
            got, truth = both(p, lookup, [cid])
            assert got == truth and got[0]["customer_usage__calls_last_30d"] == 500
    finally:
        lookup.close()


def test_a_stalled_subscriber_delays_a_write_by_its_lease_at_most():
    log = ChangeLog(lease_s=0.3)
    log.watch("stalled", None, 0, 0)  # resync reply; it never polls again
    seq = log.record("v", ["k"])
    t0 = time.monotonic()
    assert log.await_acks(seq) == 1  # it waited for the stalled one ...
    assert time.monotonic() - t0 >= 0.25  # ... until its lease ran out
    assert log.subscribers() == 0
    # a live subscriber releases the writer by acknowledging
    reply = log.watch("live", log.epoch, log.seq, 0)
    seq = log.record("v", ["k2"])
    done = threading.Event()
    threading.Thread(target=lambda: (log.await_acks(seq), done.set())).start()
    reply = log.watch("live", log.epoch, reply["seq"], 1.0)
    assert [c[2] for c in reply["changes"]] == [["k2"]]
    log.watch("live", log.epoch, reply["seq"], 0)
    assert done.wait(5)
