"""The gateway's response cache: exact match, LRU + TTL, keyed by the *resolved* version.

The key is ``(model, version, canonical input)`` where ``version`` is the version the router
picked for this request (stable, canary or pinned). A promotion changes the version the router
picks, so it can never be answered from an entry of the previous version — no invalidation
needed, and old entries age out of the LRU::

    >>> c = ResponseCache(max_entries=2, ttl_s=60)
    >>> k = cache_key("churn", 3, {"tenure_months": 3})
    >>> c.put(k, {"prediction": "stay", "probability": 0.2})
    >>> c.get(k)["prediction"], c.get(cache_key("churn", 4, {"tenure_months": 3}))
    ('stay', None)
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["ResponseCache", "cache_key", "canonical"]


def canonical(value: Any) -> str:
    """The canonical JSON of a request's input (sorted keys, no spaces): equal inputs, equal
    strings, whatever the key order the client sent."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(model: str, version: int, features: Any, kind: str = "f") -> str:
    """Cache key of one prediction: model, resolved version, input kind and canonical input."""
    return f"{model}\x1f{version}\x1f{kind}\x1f{canonical(features)}"


class ResponseCache:
    """A bounded LRU with a time-to-live per entry. One event loop uses it: no locks."""

    def __init__(
        self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Any | None:
        """The cached value, or None (missing or expired)."""
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        expires, value = item
        if self._clock() >= expires:
            del self._data[key]
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        self._data[key] = (self._clock() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self.evictions += 1

    def clear(self) -> None:
        self._data.clear()

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "entries": len(self._data),
            "max_entries": self.max_entries,
            "ttl_s": self.ttl_s,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "hit_rate": self.hits / total if total else 0.0,
        }
