"""The gateway's routing table, kept current from the registry.

:class:`RoutingTable` holds one :class:`~raymlp.serving.routing.ModelRoute` per served model and
rebuilds it when the registry says something changed (alias moved, traffic changed, a
resync), plus a periodic full re-read as a safety net. A rebuild is blue-green by construction:

1. read the registry (stable = holder of the served alias, traffic state, fallback model);
2. **warm up** every version that is about to get traffic and is not warm yet: the model
   server loads it and scores a probe row;
3. swap the whole route in one assignment. A stable version that fails to warm up is *not*
   switched to: the previous one keeps serving and the problem is reported on the route. The
   previous stable stays warm as ``standby``, so a rollback (the registry's alias rollback) is a
   switch to an already-loaded version.

Registry reads run on a thread (the client is blocking); warm-ups are awaited on the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from raymlp.config import ServeAppConfig, ServedModelConfig, ServeModelRef
from raymlp.errors import (
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RayMLPError,
    StorageError,
    UnavailableError,
)
from raymlp.serving.routing import ModelRoute, Traffic, VersionInfo

__all__ = ["RoutingTable", "WATCHED_EVENTS"]

logger = logging.getLogger(__name__)

#: Errors that say nothing about the route, only that the registry (or its storage) could not
#: answer now: the refresh is abandoned and the current route kept whole — a canary, shadow or
#: fallback must never vanish because the registry was restarting.
_TRANSIENT = (UnavailableError, StorageError, OverloadedError)

#: Registry event kinds that can change a route.
WATCHED_EVENTS = [
    "alias_moved",
    "alias_deleted",
    "traffic_changed",
    "version_registered",
    "stage_changed",
]


@dataclasses.dataclass
class _State:
    """What the registry says about one served model (read on a thread)."""

    tenant: str | None = None
    stable: VersionInfo | None = None
    traffic: Traffic = dataclasses.field(default_factory=Traffic)
    canary: VersionInfo | None = None
    shadow: VersionInfo | None = None
    fallback: VersionInfo | None = None
    problems: list[str] = dataclasses.field(default_factory=list)


class RoutingTable:
    """Routes of every served model (see the module docstring).

    Args:
        registry: the registry reads (``ReplicaServices.registry`` of
            ``raymlp.serving._platform``: get, get_traffic).
        warm: ``await warm(pool, version_info)`` loads + probes a version (raises on failure).
    """

    def __init__(
        self, cfg: ServeAppConfig, registry: Any, warm: Callable[..., Awaitable[Any]]
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self._warm_fn = warm
        self.routes: dict[str, ModelRoute] = {
            m.name: ModelRoute(name=m.name, alias=m.alias, problems=("not loaded yet",))
            for m in cfg.models
        }
        self._versions: dict[tuple[str, int], VersionInfo] = {}
        self._warm: set[tuple[str, str]] = set()
        self._tasks: dict[str, asyncio.Task] = {}
        self._dirty: set[str] = set()
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="raymlp-routes")
        self.refreshes = 0
        self.last_error: str | None = None

    # -- reads -----------------------------------------------------------------------------

    def get(self, name: str) -> ModelRoute | None:
        return self.routes.get(name)

    def served_ids(self) -> list[str]:
        """Model ids that get traffic (stable, canary, shadow, standby of every route): the
        versions a pinned one must never evict from a model server."""
        out: set[str] = set()
        for r in self.routes.values():
            out.update(v.model_id for v in (r.stable, r.canary, r.shadow) if v is not None)
            if r.standby is not None:
                out.add(f"{r.name}:{r.standby}")
        return sorted(out)

    async def version(self, name: str, version: int) -> VersionInfo:
        """A version's facts (cached: versions never change); NotFoundError if unknown."""
        vi = self._versions.get((name, version))
        if vi is None:
            loop = asyncio.get_running_loop()
            vi = await loop.run_in_executor(self._io, self._version_sync, name, version)
        return vi

    # -- the registry side (threads) --------------------------------------------------------

    def _remember(self, mv: Any) -> VersionInfo:
        vi = VersionInfo.from_model_version(mv)
        return self._versions.setdefault((vi.model, vi.version), vi)

    def _version_sync(self, name: str, version: int) -> VersionInfo:
        vi = self._versions.get((name, version))
        return vi if vi is not None else self._remember(self.registry.get(name, version=version))

    def _ref_sync(self, ref: ServeModelRef | dict[str, Any]) -> VersionInfo:
        if isinstance(ref, dict):
            ref = ServeModelRef.model_validate(ref)
        if ref.version is not None:
            return self._version_sync(ref.name, ref.version)
        return self._remember(self.registry.get(ref.name, alias=ref.alias))

    def _read_sync(self, m: ServedModelConfig) -> _State:
        st = _State()
        try:
            st.stable = self._remember(self.registry.get(m.name, alias=m.alias))
            st.tenant = st.stable.tenant
        except NotFoundError as e:
            st.problems.append(f"no stable version: {e.message}")
            try:
                st.tenant = self.registry.get(m.name).tenant
            except _TRANSIENT:
                raise
            except RayMLPError:
                pass
        get_traffic = getattr(self.registry, "get_traffic", None)
        if get_traffic is not None:
            try:
                st.traffic = Traffic.from_dict(get_traffic(m.name))
            except NotFoundError:
                pass
        for attr, version in (
            ("canary", st.traffic.canary_version),
            ("shadow", st.traffic.shadow_version),
        ):
            if version is None:
                continue
            try:
                setattr(st, attr, self._version_sync(m.name, version))
            except _TRANSIENT:
                raise
            except RayMLPError as e:
                st.problems.append(f"{attr} version {version}: {e.message}")
        ref: Any = m.fallback_model
        if ref is None and m.use_lineage_fallback and st.stable is not None:
            ref = st.stable.lineage_fallback
        if ref:
            try:
                st.fallback = self._ref_sync(ref)
            except _TRANSIENT:
                raise
            except (RayMLPError, ValueError) as e:
                st.problems.append(f"fallback model {ref!r}: {e}")
        return st

    # -- refresh -----------------------------------------------------------------------------

    def affected(self, event: dict[str, Any]) -> list[str]:
        """Served models an event concerns (all of them after a resync)."""
        if event.get("kind") == "resync":
            return list(self.routes)
        payload = event.get("payload") or {}
        name = payload.get("name")
        if name is None:
            entity = str(event.get("entity") or "")
            name = entity[len("model:") :].split("/", 1)[0] if entity.startswith("model:") else None
        out = []
        for m in self.cfg.models:
            route = self.routes.get(m.name)
            fb = route.fallback.model if route and route.fallback else None
            if name in (m.name, fb) or (m.fallback_model and m.fallback_model.name == name):
                out.append(m.name)
        return out

    def schedule(self, name: str) -> asyncio.Task | None:
        """Refresh ``name`` soon (coalesced: one refresh runs at a time per model)."""
        if name not in self.routes:
            return None
        task = self._tasks.get(name)
        if task is not None and not task.done():
            self._dirty.add(name)
            return task
        task = asyncio.ensure_future(self._refresh_until_clean(name))
        self._tasks[name] = task
        return task

    async def refresh_all(self) -> None:
        tasks = [t for t in (self.schedule(n) for n in self.routes) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _refresh_until_clean(self, name: str) -> None:
        while True:
            self._dirty.discard(name)
            try:
                await self.refresh(name)
            except Exception as e:  # noqa: BLE001 - keep the old route, report, retry later
                self.last_error = f"{name}: {e}"
                logger.exception("refreshing the route of %s failed", name)
            if name not in self._dirty:
                return

    async def ensure_warm(self, pool: str, vi: VersionInfo) -> str | None:
        """Warm ``vi`` in ``pool`` unless already warm; returns a problem, or None."""
        key = (pool, vi.model_id)
        if key in self._warm:
            return None
        try:
            await asyncio.wait_for(self._warm_fn(pool, vi), self.cfg.timeouts.warmup_s)
        except Exception as e:  # noqa: BLE001 - reported on the route
            msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            return f"warm-up of {vi.model_id} in the {pool} pool failed: {msg}"
        self._warm.add(key)
        return None

    async def refresh(self, name: str) -> ModelRoute:
        """Re-read the registry for ``name``, warm what gets traffic, swap the route."""
        m = self.cfg.model(name)
        assert m is not None  # schedule() only takes served names
        loop = asyncio.get_running_loop()
        try:
            st = await loop.run_in_executor(self._io, self._read_sync, m)
        except PermissionDeniedError as e:
            st = _State(problems=[f"the serving principal may not read it: {e.message}"])
        old = self.routes[name]
        problems = list(st.problems)
        jobs: dict[str, tuple[str, VersionInfo]] = {}
        if st.stable is not None:
            jobs["stable"] = ("primary", st.stable)
        if st.canary is not None and st.traffic.canary_weight > 0:
            jobs["canary"] = ("primary", st.canary)
        if st.shadow is not None:
            jobs["shadow"] = ("primary", st.shadow)
        if st.fallback is not None:
            jobs["fallback"] = ("fallback", st.fallback)
        results = await asyncio.gather(*(self.ensure_warm(pool, vi) for pool, vi in jobs.values()))
        failed = {role for role, problem in zip(jobs, results) if problem}
        problems += [p for p in results if p]
        stable = st.stable
        if "stable" in failed and old.stable is not None:
            stable = old.stable  # blue-green: never switch to a version that did not warm up
            problems.append(f"still serving version {old.stable.version}")
        # A canary at weight 0 (rolled back, or not started) is no canary. One that served
        # before and now fails its warm-up (a model server replica died, is restarting) keeps
        # its traffic: only a registry decision takes it away, and its requests fall through
        # to stable meanwhile. A *new* canary version gets traffic only once it is warm.
        canary = None if st.traffic.canary_weight <= 0 else st.canary
        if "canary" in failed and not _same(old.canary, canary):
            canary = None
        shadow = st.shadow if "shadow" not in failed or _same(old.shadow, st.shadow) else None
        standby = st.traffic.standby_version
        if old.stable is not None and stable is not None and old.stable.version != stable.version:
            standby = old.stable.version
        elif standby is None:
            standby = old.standby
        route = ModelRoute(
            name=name,
            alias=m.alias,
            tenant=st.tenant or old.tenant,
            stable=stable,
            canary=canary,
            canary_weight=st.traffic.canary_weight if canary else 0.0,
            shadow=shadow,
            standby=standby,
            fallback=st.fallback,
            traffic=st.traffic,
            problems=tuple(problems),
        )
        self.routes[name] = route  # the atomic switch
        self.refreshes += 1
        if old.stable is not None and stable is not None and old.stable.version != stable.version:
            logger.info(
                "%s: switched from version %d to %d", name, old.stable.version, stable.version
            )
        return route

    def close(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        self._io.shutdown(wait=False, cancel_futures=True)


def _same(a: VersionInfo | None, b: VersionInfo | None) -> bool:
    return a is not None and b is not None and a.model_id == b.model_id
