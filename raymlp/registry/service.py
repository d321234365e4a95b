"""The registry as one object: state + commands + views + event log + webhooks.

The actor (``actors/registry.py``) drives these steps with its lock and an I/O thread; tests
and tools can use :meth:`RegistryService.execute` to run a whole command synchronously::

    svc = RegistryService(config, storage)        # replays the event log
    v = svc.execute(principal, "register", {"name": "churn", "staged_path": None,
                                            "signature": sig})
    svc.query(principal, "get_version", {"name": "churn", "version": v})

The write path of one command, in order:

1. ``plan``: check the rules against the current state → events (nothing written yet);
2. ``prepare``: copy the staged artifact to ``models/<name>/<version>/``;
3. ``commit``: assign ``seq`` numbers and append the events in one Delta commit;
4. ``apply``: fold the events into the state, keep them for subscribers, queue webhooks;
5. ``finish``: remove the staged upload.

A crash before 3 leaves no trace in the state; after 3 the replay applies the events.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from raymlp._private.credentials import Authenticator
from raymlp.config import PlatformConfig
from raymlp.errors import ConflictError, ValidationError
from raymlp.registry import artifacts
from raymlp.registry.commands import ModelCommands, Plan, requires_approval
from raymlp.registry.eventlog import EventLog, LogAdvancedError
from raymlp.registry.events import Event
from raymlp.registry.rbac import Action, Actor, authorize, resolve_actor
from raymlp.registry.state import RegistryState
from raymlp.registry.tracking import TrackingCommands
from raymlp.registry.traffic_split import TrafficCommands
from raymlp.registry.views import RegistryViews
from raymlp.registry.webhooks import WebhookDispatcher
from raymlp.storage import Storage

__all__ = ["RegistryService", "COMMANDS", "QUERIES", "COMMIT_ATTEMPTS"]

logger = logging.getLogger(__name__)

#: Tries of one command whose fenced event-log commit lost to another writer (a split brain).
COMMIT_ATTEMPTS = 3

#: op name -> (object, method); what ``plan`` dispatches to.
COMMANDS = {
    "register": ("models", "register"),
    "set_stage": ("models", "set_stage"),
    "promote": ("models", "promote"),
    "delete_alias": ("models", "delete_alias"),
    "rollback": ("models", "rollback"),
    "request_promotion": ("models", "request_promotion"),
    "approve": ("models", "approve"),
    "reject": ("models", "reject"),
    "set_traffic": ("traffic", "set_traffic"),
    "record_event": ("traffic", "record_event"),
    "create_experiment": ("tracking", "create_experiment"),
    "start_run": ("tracking", "start_run"),
    "log_params": ("tracking", "log_params"),
    "log_metrics": ("tracking", "log_metrics"),
    "set_tags": ("tracking", "set_tags"),
    "log_artifact": ("tracking", "log_artifact"),
    "end_run": ("tracking", "end_run"),
}

QUERIES = (
    "list_models",
    "show_model",
    "versions",
    "get_version",
    "resolve",
    "requests",
    "alias_snapshot",
    "lineage",
    "models_using_view",
    "list_experiments",
    "get_run",
    "search_runs",
    "get_traffic",
)


class RegistryService:
    """Registry logic bound to one storage root. Not thread-safe: callers serialise writes."""

    def __init__(
        self, config: PlatformConfig, storage: Storage, webhook_env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.settings = config.registry
        self.authenticator = Authenticator.from_config(config)
        self.storage = storage
        self.log = EventLog(storage, compact_every=self.settings.compact_every)
        self.state = RegistryState()
        self.models = ModelCommands(
            self.state, self.settings, lambda n, v: storage.uri("models", n, str(v)), storage
        )
        self.tracking = TrackingCommands(self.state)
        self.traffic = TrafficCommands(self.models)
        self.views = RegistryViews(self.state, self.settings, self.models, self.tracking)
        self.recent: deque[Event] = deque(maxlen=self.settings.event_buffer)
        self.webhooks = WebhookDispatcher(self.settings.webhooks, webhook_env)
        self.replay()

    # -- recovery --------------------------------------------------------------------------

    def replay(self) -> int:
        """Rebuild the state from the event log; returns the number of events applied."""
        t0 = time.perf_counter()
        events = self.log.read_all()
        self.state.apply_all(events)
        self.recent.extend(events)
        self.replay_s = time.perf_counter() - t0
        logger.info("registry replayed %d events in %.3fs", len(events), self.replay_s)
        return len(events)

    def catch_up_events(self) -> list[Event]:
        """Events committed by someone else since our last one (I/O; apply them after)."""
        return self.log.read_after(self.state.last_seq)

    # -- the write path --------------------------------------------------------------------

    def actor(self, principal: dict[str, Any] | None) -> Actor:
        return resolve_actor(self.authenticator, principal)

    def plan(
        self, principal: Any, op: str, kwargs: dict[str, Any], op_id: str | None = None
    ) -> Plan:
        """Check a command; the events it would write (none for a retried op_id)."""
        if op not in COMMANDS:
            raise ValidationError(f"unknown registry command {op!r}", field="op", value=op)
        if op_id and op_id in self.state.op_results:
            return Plan([], self.state.op_results[op_id])
        actor = self.actor(principal)
        obj, method = COMMANDS[op]
        try:
            plan: Plan = getattr(getattr(self, obj), method)(actor, **kwargs)
        except TypeError as e:
            raise ValidationError(f"bad arguments for {op}: {e}", field="op", value=op) from None
        for ev in plan.events:
            ev.op_id = op_id
        return plan

    def prepare(self, plan: Plan) -> None:
        for staged, final in plan.artifact_copies:
            artifacts.publish_staged(self.storage, staged, final)

    def commit(self, events: list[Event]) -> None:
        """Assign seq numbers and append ``events`` durably (one Delta commit)."""
        now = round(time.time() * 1_000_000) / 1_000_000  # what the table stores (us)
        for i, ev in enumerate(events):
            ev.seq = self.state.last_seq + 1 + i
            ev.ts = now
        self.log.append(events)

    def apply(self, events: list[Event]) -> None:
        self.state.apply_all(events)
        self.recent.extend(events)
        self.webhooks.publish(events)

    def finish(self, plan: Plan) -> None:
        for path in plan.cleanup:
            artifacts.discard(self.storage, path)

    def discard(self, op: str, kwargs: dict[str, Any]) -> None:
        """Drop what a rejected ``register`` uploaded, so a refused write leaves no trace."""
        if op == "register":
            artifacts.discard(self.storage, kwargs.get("staged_path"))

    def execute(
        self, principal: Any, op: str, kwargs: dict[str, Any], op_id: str | None = None
    ) -> Any:
        """plan → prepare → commit → apply → finish, synchronously (retries a fenced log).

        Raises ConflictError (``rule="fenced_log_append"``, nothing written) when another
        writer committed to the event log first in each of :data:`COMMIT_ATTEMPTS` tries: the
        command may simply be retried (with the same ``op_id``).
        """
        entity, expected = op, None
        for _ in range(COMMIT_ATTEMPTS):
            try:
                plan = self.plan(principal, op, kwargs, op_id)
            except Exception:
                self.discard(op, kwargs)
                raise
            if not plan.events:
                self.finish(plan)
                return plan.result
            self.prepare(plan)
            entity, expected = plan.events[0].entity, self.log.version()
            try:
                self.commit(plan.events)
            except LogAdvancedError:
                self.apply(self.catch_up_events())
                continue
            self.apply(plan.events)
            self.finish(plan)
            if self.log.needs_compaction:
                self.compact()
            return plan.result
        where = "an empty log" if expected is None else f"version {expected}"
        raise ConflictError(
            f"{op} of {entity}: another writer committed to the registry event log first, "
            f"{COMMIT_ATTEMPTS} times in a row (expected {where}); nothing was written, retry "
            "(rule: a registry commit is fenced on the event-log version it planned on)",
            entity=entity,
            op=op,
            expected_version=expected,
            attempts=COMMIT_ATTEMPTS,
            rule="fenced_log_append",
        )

    def compact(self) -> None:
        try:
            self.log.compact()
        except LogAdvancedError:
            self.apply(self.catch_up_events())
        except Exception:  # compaction is an optimisation; the next one retries
            logger.exception("registry event-log compaction failed")

    # -- reads -----------------------------------------------------------------------------

    def query(self, principal: Any, op: str, kwargs: dict[str, Any]) -> Any:
        if op not in QUERIES:
            raise ValidationError(f"unknown registry query {op!r}", field="op", value=op)
        actor = self.actor(principal)
        fn: Callable[..., Any] = getattr(self.views, op)
        try:
            return fn(actor, **kwargs)
        except TypeError as e:
            raise ValidationError(f"bad arguments for {op}: {e}", field="op", value=op) from None

    def requires_approval(self, principal: Any, name: str, alias: str = "production") -> bool:
        authorize(self.actor(principal), Action.READ, "settings")
        return requires_approval(self.settings, name, alias)

    def events_after(
        self, principal: Any, after_seq: int, kinds: list[str] | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """Visible events with seq > ``after_seq`` from memory.

        ``resync`` is True when the caller fell behind what memory holds (or is ahead of the
        log, e.g. after a storage reset): it must reload a snapshot instead.
        """
        actor = self.actor(principal)
        last = self.state.last_seq
        first = self.recent[0].seq if self.recent else last + 1
        if after_seq > last or after_seq < first - 1:
            return {"events": [], "last_seq": last, "resync": True}
        picked: list[Event] = []
        scanned_to = after_seq
        # recent is ordered; skip what the caller has seen
        start = max(0, after_seq - first + 1)
        for i in range(start, len(self.recent)):
            ev = self.recent[i]
            if ev.seq <= after_seq:
                continue
            picked.append(ev)
            scanned_to = ev.seq
            if len(picked) >= limit:
                break
        else:
            scanned_to = last
        return {
            "events": self.views.visible_events(actor, picked, kinds),
            "last_seq": scanned_to,
            "resync": False,
        }

    def read_log(
        self,
        principal: Any,
        after_seq: int = 0,
        kinds: list[str] | None = None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Events from the Delta table itself (the audit log, beyond what memory keeps)."""
        actor = self.actor(principal)
        authorize(actor, Action.READ, "events")
        evs = self.log.audit(after_seq)
        return self.views.visible_events(actor, evs, kinds)[:limit]

    def close(self) -> None:
        self.webhooks.close()
