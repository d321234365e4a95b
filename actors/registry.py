"""The ``registry`` actor: the single source of truth for models, runs and their events.

Thin by design: the rules live in :mod:`raymlp.registry`. This actor adds what a long-lived
service needs on top of them:

- **durability**: ``__init__`` replays the Delta event log; a mutation is applied to memory only
  after its events are committed, so a kill -9 at any point loses no acknowledged change;
- **serialisation**: one asyncio lock around plan → commit → apply, so two concurrent moves of
  one alias are ordered and an ``expected_version`` precondition makes the loser fail with
  ConflictError;
- **group commit** of metrics: concurrent ``log_metrics`` calls share one Delta commit;
- **subscribers**: ``wait_for_events`` long-polls without holding a thread (asyncio actor);
- **maintenance**: compaction + checkpoint of the event table every ``compact_every`` commits.

Every method takes the calling principal (``Principal.model_dump()``); with auth on, roles and
tenant are looked up in the platform config, never trusted from the caller.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actors._base import PlatformActor
from raymlp.errors import RayMLPError, StorageError, UnavailableError
from raymlp.registry import artifacts
from raymlp.registry.commands import Plan
from raymlp.registry.eventlog import LogAdvancedError
from raymlp.registry.events import Event
from raymlp.registry.rbac import Action, authorize
from raymlp.registry.service import RegistryService

logger = logging.getLogger(__name__)

_MAX_POLL_S = 60.0


class RegistryActor(PlatformActor):
    """Model registry + experiment tracking. Created by ``raymlp up`` as ``registry``."""

    def __init__(self, platform_config: dict[str, Any], instance_name: str | None = None) -> None:
        super().__init__(platform_config, instance_name)
        self.svc = RegistryService(self.config, self.storage)
        # Webhook deliveries through the durable outbox: what an earlier process queued and
        # never finished, and events it committed but never queued, are sent now.
        # (audit: a separate snapshot, so the writer's fenced view of the log stays as replayed)
        self.svc.webhooks.open_outbox(self.storage, self.svc.state.last_seq, self.svc.log.audit)
        try:
            artifacts.sweep_staging(self.storage)
        except Exception:  # housekeeping only
            logger.exception("could not sweep stale staged uploads")
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-io")
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._pending_metrics: list[tuple[Any, dict[str, Any], str | None, asyncio.Future]] = []
        self._flusher: asyncio.Future | None = None
        self._compactor: asyncio.Future | None = None
        self._commit_s: list[float] = []

    # -- plumbing ----------------------------------------------------------------------------

    async def _run_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _apply(self, events: list[Event]) -> None:
        if not events:
            return
        self.svc.apply(events)
        # Wake every long-poller: they hold the old Event object.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _write(self, make_plan: Callable[[], Plan]) -> Plan:
        """plan → prepare → commit → apply, under the lock held by the caller."""
        for _ in range(3):
            plan = make_plan()
            if not plan.events:
                await self._run_io(self.svc.finish, plan)
                return plan
            if plan.artifact_copies:
                await self._run_io(self.svc.prepare, plan)
            t0 = time.perf_counter()
            try:
                await self._run_io(self.svc.commit, plan.events)
            except LogAdvancedError:
                # Someone else wrote to the log (a stale twin of this actor): catch up, re-plan.
                self._apply(await self._run_io(self.svc.catch_up_events))
                continue
            self._commit_s = [*self._commit_s[-999:], time.perf_counter() - t0]
            self._apply(plan.events)
            if plan.cleanup:
                asyncio.ensure_future(self._run_io(self.svc.finish, plan))
            if self.svc.log.needs_compaction and (
                self._compactor is None or self._compactor.done()
            ):
                self._compactor = asyncio.ensure_future(self._compact())
            return plan
        raise UnavailableError(
            "the registry event log keeps moving under this actor; retry", actor=self.instance_name
        )

    async def _compact(self) -> None:
        async with self._lock:
            try:
                await self._run_io(self.svc.log.compact)
            except LogAdvancedError:
                self._apply(await self._run_io(self.svc.catch_up_events))
            except Exception:  # an optimisation: the next one retries
                logger.exception("registry event-log compaction failed")

    # -- writes ------------------------------------------------------------------------------

    async def command(
        self, principal: dict[str, Any], op: str, kwargs: dict[str, Any], op_id: str | None = None
    ) -> Any:
        """Run one registry command (``register``, ``promote``, ``approve``...); returns its
        answer once its events are durably committed and applied. ``op_id`` makes a retried
        call return the first answer instead of acting twice."""
        async with self._lock:
            try:
                plan = await self._write(lambda: self.svc.plan(principal, op, kwargs, op_id))
            except RayMLPError as e:
                if not isinstance(e, (UnavailableError, StorageError)):
                    # Refused: drop the staged upload. (Transient failures keep it, so the
                    # client's retry with the same op_id can still use it.)
                    await self._run_io(self.svc.discard, op, kwargs)
                raise
        return plan.result

    async def log_metrics(
        self,
        principal: dict[str, Any],
        run_id: str,
        metrics: dict[str, Any],
        step: int | None = None,
        op_id: str | None = None,
    ) -> None:
        """Log metrics; returns once committed. Concurrent callers share one commit."""
        kwargs = {"run_id": run_id, "metrics": metrics, "step": step}
        self.svc.plan(principal, "log_metrics", kwargs, op_id)  # fail fast on bad input
        fut = asyncio.get_running_loop().create_future()
        self._pending_metrics.append((principal, kwargs, op_id, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_metrics())
        return await fut

    def _metrics_plan(self, batch: list, waiters: list[asyncio.Future]) -> Plan:
        """Re-check each pending ``log_metrics`` (the run may have ended meanwhile) and merge
        the valid ones into one plan; ``waiters`` gets the futures it answers."""
        waiters.clear()
        events: list[Event] = []
        for principal, kwargs, op_id, fut in batch:
            if fut.done():
                continue
            try:
                plan = self.svc.plan(principal, "log_metrics", kwargs, op_id)
            except Exception as e:
                fut.set_exception(e)
                continue
            events.extend(plan.events)
            waiters.append(fut)
        return Plan(events)

    async def _flush_metrics(self) -> None:
        while self._pending_metrics:
            async with self._lock:
                batch, self._pending_metrics = self._pending_metrics, []
                waiters: list[asyncio.Future] = []
                try:
                    await self._write(functools.partial(self._metrics_plan, batch, waiters))
                except Exception as e:
                    for fut in waiters:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)

    # -- reads (in the event-loop thread, so they never see a half-applied change) -------------

    def query(self, principal: dict[str, Any], op: str, kwargs: dict[str, Any]) -> Any:
        """A read: ``get_version``, ``list_models``, ``lineage``, ``search_runs``..."""
        return self.svc.query(principal, op, kwargs)

    def resolve(self, principal: dict[str, Any], name: str, alias: str) -> int:
        """alias → version from memory (the actor path; the SDK's watcher avoids even this)."""
        return self.svc.query(principal, "resolve", {"name": name, "alias": alias})

    def requires_approval(
        self, principal: dict[str, Any], name: str, alias: str = "production"
    ) -> bool:
        return self.svc.requires_approval(principal, name, alias)

    async def wait_for_events(
        self,
        principal: dict[str, Any],
        after_seq: int,
        timeout_s: float = 10.0,
        kinds: list[str] | None = None,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """Long-poll: events after ``after_seq`` as soon as there are any, else an empty list
        after ``timeout_s``. ``resync`` tells a subscriber it fell behind (reload a snapshot)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(float(timeout_s), 0.0), _MAX_POLL_S)
        while True:
            changed = self._changed
            res = self.svc.events_after(principal, int(after_seq), kinds, int(limit))
            remaining = deadline - loop.time()
            if res["events"] or res["resync"] or remaining <= 0:
                return res
            after_seq = res["last_seq"]
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass

    async def audit_events(
        self,
        principal: dict[str, Any],
        after_seq: int = 0,
        kinds: list[str] | None = None,
        limit: int = 10_000,
    ) -> list[dict]:
        """Events from the Delta table (complete history, not just what memory keeps)."""
        return await self._run_io(self.svc.read_log, principal, after_seq, kinds, limit)

    def stats(self, principal: dict[str, Any] | None) -> dict[str, Any]:
        """Internals for operators (admin: it names the webhook targets)."""
        authorize(self.svc.actor(principal), Action.ADMIN, "read registry stats")
        commits = sorted(self._commit_s)
        return {
            "last_seq": self.svc.state.last_seq,
            "models": len(self.svc.state.models),
            "runs": len(self.svc.state.runs),
            "replay_s": self.svc.replay_s,
            "log_version": self.svc.log.version(),
            "commit_p50_ms": commits[len(commits) // 2] * 1000 if commits else None,
            "webhooks": self.svc.webhooks.snapshot(),
            "pending_metrics": len(self._pending_metrics),
        }
