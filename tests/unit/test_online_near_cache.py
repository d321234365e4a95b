"""The near-cache's coherence rules and memory bound, without Ray (the feeds' replies applied by
hand; ``tests/integration/test_features_near_cache.py`` runs them against the actors)."""

from __future__ import annotations

import time

from raymlp._private.online_cache import NearCache
from raymlp.features.online import EXPIRED, NOT_FOUND, PRESENT
from raymlp.features.online_changes import ChangeLog

F = ("a", "b")


class _Caller:
    def wire(self) -> dict:
        return {}


def cache(max_bytes: int = 1 << 20) -> NearCache:
    c = NearCache([None, None], _Caller(), max_bytes=max_bytes)  # type: ignore[list-item]
    for store in (0, 1):
        c.apply(store, {"epoch": "e", "seq": 0, "lease_s": 60, "changes": []}, time.monotonic())
    return c


def read(c: NearCache, keys: list, store: int = 0, ttl_us: int = 0, now_us: int = 10**15):
    return c.lookup("v", F, keys, [store] * len(keys), ttl_us, now_us)


def test_hits_misses_not_found_and_ttl():
    c = cache()
    assert c.put(0, "v", F, ("e", 0), 0, [("k1", 100, (1, "x")), ("k2", None, (None, None))]) == 2
    status, values, missed = read(c, ["k1", "k2", "k3"], ttl_us=0)
    assert status.tolist() == [PRESENT, NOT_FOUND, PRESENT] and missed == [2]
    assert values == {"a": [1, None, None], "b": ["x", None, None]}
    # expired by the TTL at read time, without any event: values read as None
    status, values, missed = read(c, ["k1"], ttl_us=50, now_us=150)
    assert status.tolist() == [EXPIRED] and values == {"a": [None], "b": [None]} and not missed
    assert read(c, ["k1"], ttl_us=50, now_us=149)[0].tolist() == [PRESENT]
    # another store's entries are its own
    assert read(c, ["k1"], store=1)[2] == [0]


def test_a_read_older_than_an_applied_change_is_not_kept():
    c = cache()
    c.apply(0, {"epoch": "e", "seq": 5, "lease_s": 60, "changes": [(5, "v", ["other"])]},
            time.monotonic())
    assert c.put(0, "v", F, ("e", 4), 0, [("k1", 1, (1, 1))]) == 0  # read before change 5
    assert c.put(0, "w", F, ("e", 4), 0, [("k1", 1, (1, 1))]) == 1  # another view: fine
    assert c.put(0, "v", F, ("e", 5), 0, [("k1", 1, (1, 1))]) == 1
    assert c.put(0, "v", F, ("old-epoch", 9), 0, [("k9", 1, (1, 1))]) == 0
    gen = c.generation
    c.apply(0, {"epoch": "e", "seq": 6, "lease_s": 60, "changes": [(6, None, None)]},
            time.monotonic())  # new definitions: everything goes
    assert c.stats()["entries"] == 0 and c.generation == gen + 1
    assert c.put(0, "v", F, ("e", 7), gen, [("k1", 1, (1, 1))]) == 0  # sent before the clear


def test_changes_drop_keys_views_and_a_resync_drops_everything():
    c = cache()
    c.put(0, "v", F, ("e", 0), 0, [(f"k{i}", 1, (i, i)) for i in range(5)])
    c.put(1, "v", F, ("e", 0), 0, [("k0", 1, (0, 0))])
    c.apply(0, {"epoch": "e", "seq": 1, "lease_s": 60, "changes": [(1, "v", ["k1", "k2"])]},
            time.monotonic())
    assert read(c, ["k0", "k1", "k2", "k3"])[2] == [1, 2]
    c.apply(0, {"epoch": "e", "seq": 2, "lease_s": 60, "changes": [(2, "v", None)]},
            time.monotonic())
    assert read(c, ["k0", "k3"])[2] == [0, 1] and read(c, ["k0"], store=1)[2] == []
    c.apply(1, {"epoch": "e2", "seq": 0, "lease_s": 60, "resync": True, "changes": []},
            time.monotonic())  # store 1 restarted
    assert c.stats()["entries"] == 0


def test_no_lease_no_answers():
    c = cache()
    c.put(0, "v", F, ("e", 0), 0, [("k1", 1, (1, 1))])
    assert read(c, ["k1"])[2] == []
    c.apply(0, {"epoch": "e", "seq": 0, "lease_s": 0.01, "changes": []}, time.monotonic() - 1)
    assert not c.leased(0) and read(c, ["k1"])[2] == [0]  # kept, but not used


def test_memory_bound_least_recently_used_first_out():
    c = cache(max_bytes=3000)
    for i in range(40):
        c.put(0, "v", F, ("e", 0), 0, [(f"k{i}", 1, (i, "x" * 20))])
        read(c, ["k0"])  # k0 stays recent
    st = c.stats()
    assert 0 < st["bytes"] <= 3000 and st["evictions"] > 0
    assert read(c, ["k0", "k39"])[2] == [] and read(c, ["k1"])[2] == [0]


def test_changelog_resync_and_ring():
    log = ChangeLog(lease_s=5, capacity=3)
    first = log.watch("s", None, 0, 0)
    assert first["resync"] and first["epoch"] == log.epoch
    for i in range(5):
        log.record("v", [i])
    # fell out of the ring: resync
    assert log.watch("s", log.epoch, first["seq"], 0)["resync"]
    reply = log.watch("s", log.epoch, 3, 0)
    assert [c[0] for c in reply["changes"]] == [4, 5] and not reply.get("resync")
    assert log.record("v", list(range(10_000))) and log.watch("s", log.epoch, 5, 0)[
        "changes"] == [(6, "v", None)]  # too many keys: the whole view
    log.forget("s")
    assert log.subscribers() == 0
