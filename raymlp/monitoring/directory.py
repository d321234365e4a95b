"""Which models exist and who owns them, as the monitor knows it: a cached copy of the registry.

The monitor never derives a model's tenant from traffic (a record says which tenant *called*,
not who owns the model), and only registered model versions create monitoring state or metric
series. :class:`ModelDirectory` answers both questions from a snapshot of the registry
(``{model: ModelEntry}``), refreshed every ``ttl_s``; a name (or a version newer than the
snapshot's latest) that the snapshot does not know triggers at most one refresh per
``miss_ttl_s`` (the negative cache), so a flood of made-up names costs one registry call every
few seconds, not one per record::

    d = ModelDirectory(lambda: {"churn": ModelEntry("acme", latest_version=3)})
    d.tenant("churn")        # 'acme'
    d.admits("churn", 4)     # False: version 4 is not registered (yet)
    d.tenant("made-up")      # None

A failing fetch (registry down or slow) keeps the last snapshot: the monitor goes on with what
it knew, and before its first snapshot it knows nothing (fail closed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["ModelDirectory", "ModelEntry"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its owning tenant and newest version number (versions are never
    reused, so every number from 1 to ``latest_version`` is registered)."""

    tenant: str
    latest_version: int | None = None


Fetch = Callable[[], Mapping[str, ModelEntry] | None]


class ModelDirectory:
    """A TTL-cached ``{model: ModelEntry}`` snapshot of the registry (see the module docstring).

    Args:
        fetch: () → the registry's models, or None / an exception when it cannot answer.
        ttl_s: age after which the snapshot is refreshed on the next lookup.
        miss_ttl_s: shortest time between two refreshes caused by unknown names.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        fetch: Fetch,
        ttl_s: float = 30.0,
        miss_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.ttl_s = ttl_s
        self.miss_ttl_s = miss_ttl_s
        self._clock = clock
        self._models: dict[str, ModelEntry] = {}
        self._loaded_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt (successful or not)
        self._lock = threading.Lock()
        self.refreshes = 0

    def _refresh(self, now: float) -> None:
        self._tried_at = now
        try:
            got = self._fetch()
        except Exception as e:  # noqa: BLE001 - the registry is down: keep what we know
            logger.debug("model directory refresh failed: %s", e)
            return
        if got is None:
            return
        self._models = dict(got)
        self._loaded_at = now
        self.refreshes += 1

    def _entry(self, model: str, version: int | None = None) -> ModelEntry | None:
        with self._lock:
            now = self._clock()
            if self._loaded_at is None or now - self._loaded_at >= self.ttl_s:
                if self._tried_at is None or now - self._tried_at >= self.miss_ttl_s:
                    self._refresh(now)
            entry = self._models.get(model)
            if not self._known(entry, version) and (
                self._tried_at is None or now - self._tried_at >= self.miss_ttl_s
            ):
                self._refresh(now)  # maybe registered since the snapshot: look once more
                entry = self._models.get(model)
            return entry if self._known(entry, version) else None

    @staticmethod
    def _known(entry: ModelEntry | None, version: int | None) -> bool:
        if entry is None:
            return False
        if version is None:
            return True
        return entry.latest_version is not None and 1 <= version <= entry.latest_version

    def tenant(self, model: str) -> str | None:
        """The owning tenant of a registered model; None when the registry does not know it."""
        entry = self._entry(model)
        return entry.tenant if entry is not None else None

    def admits(self, model: str, version: int | None) -> bool:
        """Whether records of ``model`` (at ``version``; None: unversioned answers such as a
        rule or default) may create monitoring state."""
        return self._entry(model, version) is not None

    def invalidate(self) -> None:
        """Forget the snapshot's age: the next lookup refreshes it."""
        with self._lock:
            self._loaded_at = None
            self._tried_at = None
