"""Response cache: exact match on (model, resolved version, canonical input), LRU + TTL."""

from __future__ import annotations

from raymlp.serving.cache import ResponseCache, cache_key, canonical


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_key_is_canonical_and_includes_the_version():
    a = cache_key("churn", 3, {"b": 1, "a": 2.5})
    assert a == cache_key("churn", 3, {"a": 2.5, "b": 1})
    assert a != cache_key("churn", 4, {"a": 2.5, "b": 1})  # a promotion never hits old entries
    assert a != cache_key("other", 3, {"a": 2.5, "b": 1})
    assert cache_key("m", 1, {"x": 1}, "e") != cache_key("m", 1, {"x": 1}, "f")
    assert canonical({"b": [1, 2], "a": None}) == '{"a":null,"b":[1,2]}'


def test_hit_miss_and_ttl():
    clock = Clock()
    c = ResponseCache(max_entries=10, ttl_s=5, clock=clock)
    c.put("k", ("stay", 0.2))
    assert c.get("k") == ("stay", 0.2)
    clock.t = 4.9
    assert c.get("k") is not None
    clock.t = 5.0
    assert c.get("k") is None
    assert len(c) == 0
    assert c.stats()["hits"] == 2 and c.stats()["misses"] == 1


def test_lru_evicts_the_least_recently_used():
    c = ResponseCache(max_entries=2, ttl_s=60)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now more recent than b
    c.put("c", 3)
    assert c.get("b") is None
    assert c.get("a") == 1 and c.get("c") == 3
    assert c.stats()["evictions"] == 1
