"""The ``monitor`` actor: the prediction log, live windows, alerts, canary verdicts, metrics.

Thin shell around :class:`raymlp.monitoring.MonitorCore` (all logic lives there). It adds:

* **durability** — prediction records and labels are appended to Delta tables
  (``<root>/monitoring/prediction_log``, ``feedback``) by group commit: concurrent callers share
  one commit and return once their rows are durable; only then are they folded into the
  windows. Alert transitions, canary decisions and runtime config go to
  ``<root>/monitoring/events``. A restarted actor replays the events and the last
  ``monitor.retention`` of both logs, so windows and alert state come back as they were;
* **a periodic evaluation** (every ``monitor.evaluate_interval_s``): alert rules, canary
  analysis, gauges; transitions are persisted, then delivered (log, registry event stream,
  webhooks) and canary weight changes applied through the *traffic controller*;
* **metrics export** — a Prometheus ``/metrics`` endpoint (``monitor.metrics_port``; 0 picks a
  free port on the first start and records it as a ``metrics_endpoint`` event, so a restart
  binds the same one and ``metrics_url`` stays what a scrape config was given) and a
  ``ray.util.metrics`` mirror (Ray dashboard);
* **exactly-once logs** — a record whose key was already committed (a client's retry after a
  timeout) is dropped and counted (``raymlp_prediction_log_duplicates_total{kind}``,
  ``duplicates`` in the answer): predictions keyed by (request id, shadow or not), labels by
  request id, over the last ``monitor.dedup_window`` rows of each log (rebuilt from the logs on
  restart); a client's report of records it dropped is counted once per ``drop_id``;
* **decisions after durability** — canary and alert state moves only once its event is in
  ``events``: when the append fails the evaluation is undone (nothing applied, retried next
  time).

Every RPC takes the caller's *credential* first (``{"name", "api_key"}`` or a service token;
see ``raymlp._private.credentials``) and verifies it here: never a claimed name or role list,
never "no credential means admin". Roles: logging records and every read need an authenticated
caller (viewer), ``evaluate`` / ``resolve_alert`` / ``apply_config`` a developer,
``set_traffic_controller`` an admin.

**Sealed tenants.** A model's tenant is the registry's (``list_models`` as the monitor's service
principal, cached: :class:`~raymlp.monitoring.directory.ModelDirectory`), never the tenant of a
prediction record. Every read is filtered to the caller's tenant (admins see all); another
tenant's model answers ``NotFoundError`` exactly like a model that does not exist.

**Bounded state.** Only registered model versions (and configured tenants) create windows or
metric series: other records are counted in ``raymlp_unknown_model_records_total{reason}``
and dropped before they are logged.

The contract with the Serve gateway (asynchronous, batched; see
``raymlp._private.prediction_logger`` for the client-side :class:`PredictionLogger` that never
blocks the request path):

* ``log_predictions(credential, records, source="gateway", dropped=0, drop_id=None)`` —
  prediction records (``raymlp.monitoring.records``): all or nothing; a bad record raises
  ValidationError naming ``records[i].field`` and nothing is written. ``dropped``: records the
  caller had to drop since its last call (buffer full), exported as
  ``raymlp_prediction_log_dropped_total``; ``drop_id`` names that report, so a re-sent one is
  counted once (``dropped_reported`` is then 0). Re-sending a batch is safe: records already
  logged come back as ``duplicates``.
* ``log_feedback(credential, records)`` — ``{request_id, label, ts, model}``: joined by
  request id (a label naming another model than the request's is ignored; a second label for
  the same request is a duplicate).

The traffic controller is ``fn(model, *, canary_version, canary_weight, reason)``. By default
it calls the registry actor's ``set_traffic`` command (through ``raymlp._private.rpc``, as the
``monitor`` principal); tests inject their own with ``set_traffic_controller``. A refusal that
a retry cannot fix (``PermissionDeniedError`` — e.g. an unapproved version above
``registry.max_unapproved_canary_weight`` — or a validation/not-found/conflict error) is
recorded once: the canary is held at the weight in force (``blocked``: it no longer advances
automatically, still rolls back on a regression) and a ``canary_blocked`` alert fires.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pyarrow as pa

from actors._base import PlatformActor
from raymlp._private.credentials import Authenticator, Caller
from raymlp._private.principals import service_principal
from raymlp._private.rpc import ActorClient, RegistryRPC
from raymlp.config import MonitoringConfig, Principal
from raymlp.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
    ValidationError,
)
from raymlp.monitoring.core import MonitorCore
from raymlp.monitoring.directory import ModelDirectory, ModelEntry
from raymlp.monitoring.logtable import DeltaLog, EventTable, GroupCommitter, RecentKeys
from raymlp.monitoring.notify import Notifier
from raymlp.monitoring.prometheus import MonitorMetrics, RayMetricsMirror
from raymlp.monitoring.records import (
    FEEDBACK_SCHEMA,
    PREDICTION_SCHEMA,
    feedback_to_table,
    normalize_feedbacks,
    normalize_predictions,
    predictions_to_table,
    table_to_feedback,
    table_to_predictions,
)
from raymlp.monitoring.reference import ReferenceProfile

logger = logging.getLogger(__name__)

TrafficController = Callable[..., Any]
_REPLAY_CHUNK = 20_000
_FRESHNESS_TTL_S = 60.0
_TRAFFIC_TTL_S = 5.0
_COLLABORATOR_TIMEOUT_S = 2.0
_DIRECTORY_TTL_S = 30.0
_DIRECTORY_MISS_TTL_S = 2.0
#: Ids of dropped-record reports remembered (a client re-sends one only until it is answered).
_DROP_REPORTS_KEPT = 10_000
_ROLES = ("viewer", "developer", "approver", "admin")
_MODEL_LABEL = re.compile(r'[{,]model="([^"]*)"')
#: Refusals of a traffic change that a retry cannot fix (the registry said no).
_PERMANENT = (PermissionDeniedError, ValidationError, NotFoundError, ConflictError)


def _prediction_key(request_id: str, route: str) -> tuple[str, bool]:
    """What makes a prediction row unique: a shadow call shares the request id of the answered
    request and is a row of its own."""
    return request_id, route == "shadow"


class MonitorActor(PlatformActor):
    """See the module docstring. Created by ``raymlp up`` as the named actor ``monitor``."""

    def __init__(self, platform_config: dict[str, Any], instance_name: str | None = None) -> None:
        super().__init__(platform_config, instance_name)
        # Every RPC verifies its caller's credential here (never a claimed name or role).
        self._auth = Authenticator.from_config(self.config)
        s = self.config.monitor
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.metrics = MonitorMetrics()
        self._mirror: RayMetricsMirror | None = None
        if s.ray_metrics:
            try:
                self._mirror = RayMetricsMirror()
            except Exception as e:  # noqa: BLE001 - the dashboard mirror is optional
                logger.warning("ray.util.metrics mirror disabled: %s", e)
        self.pred_log = DeltaLog(
            self.storage, "prediction_log", PREDICTION_SCHEMA, ["date"], s.compact_every
        )
        self.feedback_log = DeltaLog(
            self.storage, "feedback", FEEDBACK_SCHEMA, ["date"], s.compact_every
        )
        self.events = EventTable(self.storage, s.compact_every)
        # Keys of the rows already committed: a retried batch must not be logged twice.
        self._seen_predictions = RecentKeys(s.dedup_window)
        self._seen_feedback = RecentKeys(s.dedup_window)
        # Ids of the dropped-record reports already counted (a report re-sent after a timeout).
        self._seen_drops = RecentKeys(_DROP_REPORTS_KEPT)
        self._drops_lock = threading.Lock()
        self._metrics_port_recorded: int | None = None
        self._controller: TrafficController | None = None
        self._controller_pending: dict[str, dict[str, Any]] = {}
        self._registry_rpc: RegistryRPC | None = None
        self._directory_ok = True
        self._service_caller: Caller | None = None
        self._feature_store: ActorClient | None = None
        self._freshness_cache: tuple[float, dict[str, float]] = (0.0, {})
        self._traffic_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="raymlp-monitor-io")
        # Which models exist and who owns them: the registry's word, never the records'.
        self.directory = ModelDirectory(self._fetch_models, _DIRECTORY_TTL_S, _DIRECTORY_MISS_TTL_S)
        self.core = MonitorCore(
            s,
            profile_for=self._load_profile,
            metrics=self.metrics,
            freshness=self._freshness,
            traffic_lookup=self._traffic,
            directory=self.directory,
            tenants=[t.name for t in self.config.auth.tenants],
        )
        self.replayed = self._restore()
        self.notifier = self._make_notifier(self.core.config)
        self._pred_commit = GroupCommitter(self._commit_predictions)
        self._fb_commit = GroupCommitter(self._commit_feedback)
        self._server, self.metrics_port = self._start_metrics_server()
        self._evaluator = threading.Thread(
            target=self._evaluate_loop, name="raymlp-monitor-eval", daemon=True
        )
        self._evaluator.start()

    # -- startup -------------------------------------------------------------------------------

    def _restore(self) -> dict[str, int]:
        """Replay events (config, alerts, canaries) and the recent logs into the core."""
        now = time.time()
        horizon = now - self.config.monitor.retention.total_seconds()
        events = self.events.read()
        configs = [e for e in events if e["kind"] == "config"]
        if configs:
            self.core.apply_config(MonitoringConfig.model_validate(configs[-1]["payload"]), now)
        self.core.engine.restore(e["payload"] for e in events if e["kind"] == "alert")
        self.core.canary.restore(e["payload"]["run"] for e in events if e["kind"] == "canary")
        for e in events:  # weight changes decided but not yet applied when we went down
            p = e["payload"]
            if e["kind"] == "canary" and p["action"]["decision"] in ("rollback", "advance"):
                self._controller_pending[p["action"]["model"]] = p["action"]
            elif e["kind"] == "canary" and p["action"]["decision"] == "blocked":
                self._controller_pending.pop(p["action"]["model"], None)  # refused: never retried
            elif e["kind"] == "traffic_applied":
                a = self._controller_pending.get(p["model"])
                if a is not None and a["version"] == p["version"] and a["weight"] == p["weight"]:
                    del self._controller_pending[p["model"]]
        for e in events:
            if e["kind"] == "metrics_endpoint":
                self._metrics_port_recorded = int(e["payload"]["port"])
            if e["kind"] == "dropped":
                if e["payload"].get("drop_id"):
                    self._seen_drops.add([e["payload"]["drop_id"]])
                if e["ts"] >= horizon:
                    self.core.note_dropped(
                        e["payload"]["source"], e["payload"]["count"], e["ts"], live=False
                    )
        preds = self.pred_log.read(start_ts=horizon)
        # the newest rows (the log is read sorted by ts): what a retry can still re-send
        recent = preds.slice(max(0, preds.num_rows - self._seen_predictions.capacity))
        self._seen_predictions.add(
            map(_prediction_key, recent["request_id"].to_pylist(), recent["route"].to_pylist())
        )
        for i in range(0, preds.num_rows, _REPLAY_CHUNK):
            self.core.ingest_predictions(
                table_to_predictions(preds.slice(i, _REPLAY_CHUNK)), live=False, now=now
            )
        fbs = self.feedback_log.read(start_ts=horizon)
        recent = fbs.slice(max(0, fbs.num_rows - self._seen_feedback.capacity))
        self._seen_feedback.add(recent["request_id"].to_pylist())
        for i in range(0, fbs.num_rows, _REPLAY_CHUNK):
            self.core.ingest_feedback(table_to_feedback(fbs.slice(i, _REPLAY_CHUNK)), live=False)
        self.core.metrics.gauges.set(self.core.gauge_values(now))
        if preds.num_rows or events:
            logger.info(
                "monitor restored %d events, %d predictions, %d labels",
                len(events),
                preds.num_rows,
                fbs.num_rows,
            )
        return {"events": len(events), "predictions": preds.num_rows, "feedback": fbs.num_rows}

    def _make_notifier(self, cfg: MonitoringConfig) -> Notifier:
        # One durable webhook outbox per process, shared by the notifiers apply_config swaps
        # in; only the first re-queues what an earlier process left undelivered (a later one
        # would re-send what the notifier it replaces is still draining).
        from raymlp._private.webhooks import Outbox

        outbox: Outbox | None = getattr(self, "_webhook_outbox", None)
        recover = outbox is None
        if outbox is None:
            outbox = self._webhook_outbox = Outbox(self.storage, "monitoring", "webhook_outbox")
        return Notifier(
            cfg.webhooks,
            registry_sink=self._registry_sink if cfg.deliver_to_registry else None,
            on_outcome=lambda ch, out: self.metrics.notifications.labels(ch, out).inc(),
            outbox=outbox,
            recover=recover,
        )

    def _start_metrics_server(self) -> tuple[Any, int]:
        """Bind the Prometheus endpoint: the configured port, else the one an earlier start of
        this monitor picked (so a scrape target survives restarts), else a free one, which is
        then recorded for the next start."""
        from prometheus_client import start_http_server

        s = self.config.monitor
        wanted = s.metrics_port or self._metrics_port_recorded or 0
        try:
            server, _ = start_http_server(wanted, s.metrics_host, registry=self.metrics.registry)
        except OSError as e:
            if not wanted:
                raise
            logger.error(
                "metrics port %d is taken (%s): serving on a free port instead; a Prometheus "
                "scraping the old address loses this target (set monitor.metrics_port)",
                wanted,
                e,
            )
            server, _ = start_http_server(0, s.metrics_host, registry=self.metrics.registry)
        port = int(server.server_port)
        if not s.metrics_port and port != self._metrics_port_recorded:
            try:
                self.events.append([("metrics_endpoint", time.time(), {"port": port})])
                self._metrics_port_recorded = port
            except Exception as e:  # noqa: BLE001 - serving works; only the next start moves
                logger.warning(
                    "could not record metrics port %d (a restart may move it): %s", port, e
                )
        return server, port

    # -- collaborators (reached lazily; the monitor works without them) ---------------------------

    def _registry(self) -> RegistryRPC:
        """The registry actor, as the ``monitor`` principal (retried across its restarts)."""
        if self._registry_rpc is None:
            actor = ActorClient("registry", self.config.ray.namespace)
            self._registry_rpc = RegistryRPC(actor, self._caller())
        return self._registry_rpc

    def _caller(self) -> Caller:
        """The monitor's own service credential (tokens signed with the platform secret)."""
        if self._service_caller is None:
            self._service_caller = service_principal(self.config, self.config.monitor.principal)
        return self._service_caller

    def _fetch_models(self) -> dict[str, ModelEntry] | None:
        """The registry's models as the monitor's service principal sees them (None when the
        registry does not answer within the collaborator deadline)."""

        def fetch() -> dict[str, ModelEntry]:
            rows = self._registry().query("list_models")
            return {
                r["name"]: ModelEntry(str(r["tenant"]), r.get("latest_version")) for r in rows
            }

        fut = self._io.submit(fetch)
        try:
            got = fut.result(timeout=_COLLABORATOR_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - keep the last snapshot; say so once
            if self._directory_ok:
                logger.warning(
                    "the registry's model list is unavailable (%s): records of models not "
                    "seen before are dropped until it answers (monitor.principal %r must be a "
                    "service principal that can read the models)",
                    e,
                    self.config.monitor.principal,
                )
            self._directory_ok = False
            return None
        self._directory_ok = True
        return got

    def _features(self) -> ActorClient:
        if self._feature_store is None:
            self._feature_store = ActorClient("feature_store", self.config.ray.namespace)
        return self._feature_store

    def _load_profile(self, model: str, version: int) -> ReferenceProfile | None:
        rel = f"models/{model}/{int(version)}/reference_profile.json"
        try:
            raw = self.storage.read_bytes(rel)
        except StorageError:
            return None
        return ReferenceProfile.from_dict(json.loads(raw))

    def _bounded(self, fn: Callable[[], Any], default: Any) -> Any:
        """Run a call to another actor with a short deadline: evaluation holds the core's
        lock, so a slow or restarting registry/feature store must not stall ingestion."""
        fut = self._io.submit(fn)
        try:
            return fut.result(timeout=_COLLABORATOR_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - timeout or error: use what we have
            logger.debug("collaborator call failed: %s", e)
            return default

    def _traffic(self, model: str) -> dict[str, Any] | None:
        at, cached = self._traffic_cache.get(model, (0.0, None))
        if time.time() - at < _TRAFFIC_TTL_S:
            return cached

        def fetch() -> dict[str, Any] | None:
            out = self._registry().query("get_traffic", name=model)
            return out if isinstance(out, dict) else getattr(out, "__dict__", None)

        value = self._bounded(fetch, cached)
        self._traffic_cache[model] = (time.time(), value)
        return value

    def _freshness(self) -> dict[str, float]:
        views = self.core.config.freshness
        if not views:
            return {}
        at, cached = self._freshness_cache
        if time.time() - at < _FRESHNESS_TTL_S:
            return cached

        def fetch() -> dict[str, float]:
            ages: dict[str, float] = {}
            for view in views:
                try:
                    info = self._features().call("describe", view, self._caller().wire())
                    last = (info.get("table") or {}).get("last_event_time")
                    if last:
                        ages[view] = time.time() - datetime.fromisoformat(str(last)).timestamp()
                except Exception as e:  # noqa: BLE001 - a missing view/actor: no freshness
                    logger.debug("freshness of %s unavailable: %s", view, e)
            return ages

        ages = self._bounded(fetch, cached)
        self._freshness_cache = (time.time(), ages)
        return ages

    def _registry_sink(self, transition: dict[str, Any]) -> None:
        self._registry().command(
            "record_event",
            kind="monitor_alert",
            model=transition.get("labels", {}).get("model"),
            payload={
                k: transition.get(k)
                for k in (
                    "id",
                    "transition",
                    "rule",
                    "severity",
                    "labels",
                    "value",
                    "threshold",
                    "summary",
                    "ts",
                )
            },
        )

    def _default_controller(
        self, model: str, *, canary_version: int, canary_weight: float, reason: str
    ) -> dict[str, Any]:
        self._registry().command(
            "set_traffic",
            name=model,
            reason=reason,
            canary_version=canary_version,
            canary_weight=canary_weight,
        )
        return {"applied": True}

    # -- commits ------------------------------------------------------------------------------

    def _commit_predictions(self, items: list[tuple[dict[str, Any], str, list[int]]]) -> None:
        """Commit one group of callers' records. Each item carries its caller's duplicate
        counter. Commits run one at a time (GroupCommitter), so checking the recent keys
        here and adding them after the append cannot race with a concurrent retry."""
        t0 = time.perf_counter()

        def key(item: tuple[dict[str, Any], str, list[int]]) -> tuple[str, bool]:
            return _prediction_key(item[0]["request_id"], item[0]["route"])

        fresh, dups = self._seen_predictions.split(items, key)
        if not fresh:
            self._count_duplicates("prediction", dups)
            return
        by_source: dict[str, list[dict[str, Any]]] = {}
        for rec, source, _ in fresh:
            by_source.setdefault(source, []).append(rec)
        table = pa.concat_tables([predictions_to_table(r, s) for s, r in by_source.items()])
        self.pred_log.append(table)
        self._seen_predictions.add(key(it) for it in fresh)
        self._count_duplicates("prediction", dups)  # once the batch they rode with is in
        self.metrics.log_commit.labels("prediction_log").observe(time.perf_counter() - t0)
        self.metrics.log_rows.labels("prediction_log").inc(table.num_rows)
        records = [rec for rec, _, _ in fresh]
        with self._lock:
            self.core.ingest_predictions(records)
        if self._mirror is not None:
            self._mirror.observe_batch(records)

    def _commit_feedback(self, items: list[tuple[dict[str, Any], list[int]]]) -> None:
        """Like :meth:`_commit_predictions`: one label per request id."""
        t0 = time.perf_counter()
        fresh, dups = self._seen_feedback.split(items, lambda it: it[0]["request_id"])
        if not fresh:
            self._count_duplicates("feedback", dups)
            return
        records = [rec for rec, _ in fresh]
        self.feedback_log.append(feedback_to_table(records))
        self._seen_feedback.add(r["request_id"] for r in records)
        self._count_duplicates("feedback", dups)
        self.metrics.log_commit.labels("feedback").observe(time.perf_counter() - t0)
        self.metrics.log_rows.labels("feedback").inc(len(records))
        with self._lock:
            self.core.ingest_feedback(records)

    def _count_duplicates(self, kind: str, dups: list[Any]) -> None:
        """Count ``dups`` (``kind``: prediction | feedback) in
        ``raymlp_prediction_log_duplicates_total`` and in each one's caller counter (its last
        element)."""
        for it in dups:
            it[-1][0] += 1
        if dups:
            self.metrics.log_duplicates.labels(kind).inc(len(dups))

    def _report_dropped(self, source: str, dropped: int, drop_id: str | None) -> int:
        """Record a client's report of ``dropped`` records (durably, then in the metrics);
        a report whose ``drop_id`` was recorded before (re-sent after a timeout) is not
        counted again. Returns the count recorded now."""
        with self._drops_lock:  # a retry may arrive while the first send is still here
            if drop_id is not None and drop_id in self._seen_drops:
                return 0
            now = time.time()
            payload: dict[str, Any] = {"source": source, "count": dropped}
            if drop_id is not None:
                payload["drop_id"] = drop_id
            self.events.append([("dropped", now, payload)])
            if drop_id is not None:
                self._seen_drops.add([drop_id])
        with self._lock:
            self.core.note_dropped(source, dropped, now)
        return dropped

    # -- RPC: ingest -----------------------------------------------------------------------------

    def log_predictions(
        self,
        principal: dict[str, Any] | None,
        records: list[dict[str, Any]],
        source: str = "sdk",
        dropped: int = 0,
        drop_id: str | None = None,
    ) -> dict[str, Any]:
        """Append prediction records (durable on return); see the module docstring. Records of
        model versions the registry does not know (or of another tenant's models, for a caller
        that is neither an admin nor a service) are counted and dropped, never stored."""
        p = self._require(principal, "viewer")
        recs = normalize_predictions(records)
        if not isinstance(source, str) or not source or len(source) > 64:
            raise ValidationError(
                f"source {source!r} is invalid (rule: 1-64 chars)",
                field="source",
                value=source,
                rule="1-64 chars",
            )
        if isinstance(dropped, bool) or not isinstance(dropped, int) or dropped < 0:
            raise ValidationError(
                f"dropped {dropped!r} is invalid (rule: an integer >= 0)",
                field="dropped",
                value=dropped,
                rule=">= 0",
            )
        if drop_id is not None and (not isinstance(drop_id, str) or not 0 < len(drop_id) <= 64):
            raise ValidationError(
                f"drop_id {drop_id!r} is invalid (rule: 1-64 chars)",
                field="drop_id",
                value=drop_id,
                rule="1-64 chars",
            )
        received = len(recs)
        recs = self.core.admit(self._own_records(p, recs))
        if dropped:
            dropped = self._report_dropped(source, dropped, drop_id)
        duplicates = [0]  # this call's share of the duplicates of the commit it joins
        if recs:
            self._pred_commit.submit([(r, source, duplicates) for r in recs])
        return {
            "accepted": len(recs) - duplicates[0],
            "unknown": received - len(recs),
            "duplicates": duplicates[0],
            "dropped_reported": dropped,
        }

    def log_feedback(
        self, principal: dict[str, Any] | None, records: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Append labels (``request_id``, ``label``, ``ts``, ``model``) and join them to
        predictions. A caller that is neither an admin nor a service must name a model of its
        own tenant in every label; other labels are dropped and counted in ``unknown``."""
        p = self._require(principal, "viewer")
        recs = normalize_feedbacks(records)
        received = len(recs)
        if not self._trusted_source(p):
            recs = [r for r in recs if r["model"] is not None and self._sees(p, r["model"])]
        if received > len(recs):
            self.metrics.unknown_records.labels("unregistered_model").inc(received - len(recs))
        duplicates = [0]
        if recs:
            self._fb_commit.submit([(r, duplicates) for r in recs])
        return {
            "accepted": len(recs) - duplicates[0],
            "unknown": received - len(recs),
            "duplicates": duplicates[0],
        }

    def _trusted_source(self, p: Principal) -> bool:
        """Callers whose records may name any model and tenant: admins and the platform's own
        service principals (the gateway logs the tenant of the HTTP caller it verified)."""
        return "admin" in p.roles or (self._auth.enabled and p.api_key_sha256 is None)

    def _own_records(self, p: Principal, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A person (API key, not admin) speaks for its own tenant only: its records carry its
        tenant, and records of another tenant's models go the way of unknown models."""
        if self._trusted_source(p):
            return recs
        kept = []
        for r in recs:
            if self._sees(p, r["model"]):
                kept.append({**r, "tenant": p.tenant})
        if len(kept) < len(recs):
            self.metrics.unknown_records.labels("unregistered_model").inc(len(recs) - len(kept))
        return kept

    # -- RPC: evaluation ---------------------------------------------------------------------------

    def evaluate(self, principal: dict[str, Any] | None) -> dict[str, Any]:
        """Run one evaluation now (also runs every ``evaluate_interval_s``); what it returns is
        limited to the caller's tenant."""
        p = self._require(principal, "developer")
        out = self._evaluate()
        seen = self._seer(p)
        return {
            "transitions": [t for t in out["transitions"] if seen(t["labels"].get("model"))],
            "canary": [a for a in out["canary"] if seen(a["model"])],
            "traffic_applied": [a for a in out["traffic_applied"] if seen(a["model"])],
        }

    def _evaluate(self) -> dict[str, Any]:
        """One evaluation. Its events are appended before its decisions count: when the
        append fails, the core undoes the evaluation (canary runs, alerts) and the error
        propagates, so nothing is applied or delivered and the next evaluation decides again."""
        now = time.time()

        def persist(out: dict[str, Any]) -> None:
            events: list[tuple[str, float, dict[str, Any]]] = [
                ("alert", now, t) for t in out["transitions"]
            ]
            events += [
                (
                    "canary",
                    now,
                    {"action": {k: v for k, v in a.items() if k != "run"}, "run": a["run"]},
                )
                for a in out["canary"]
                if a["decision"] != "hold"
            ]
            self.events.append(events)  # no-op when empty

        with self._lock:
            out = self.core.evaluate(now, persist=persist)
            for a in out["canary"]:
                if a["decision"] in ("rollback", "advance"):
                    self._controller_pending[a["model"]] = a
        applied = self._apply_traffic()
        for t in out["transitions"]:
            self.notifier.notify(t)
        if self._mirror is not None:
            try:
                self._mirror.set_gauges(self.metrics.gauges.get())
            except Exception as e:  # noqa: BLE001
                logger.debug("ray metrics mirror failed: %s", e)
        return {
            "transitions": out["transitions"],
            "canary": [{k: v for k, v in a.items() if k != "run"} for a in out["canary"]],
            "traffic_applied": applied,
        }

    def _apply_traffic(self) -> list[dict[str, Any]]:
        """Call the traffic controller for pending weight changes (retried until it works)."""
        done = []
        for model, a in list(self._controller_pending.items()):
            fn = self._controller or self._default_controller
            try:
                res = fn(
                    model,
                    canary_version=a["version"],
                    canary_weight=a["weight"],
                    reason=f"monitor: {a['decision']}: {a['reason']}",
                )
            except _PERMANENT as e:
                # The registry said no (e.g. an unapproved version above the canary ceiling):
                # retrying cannot change that, so record and alert it once and stop.
                done.append({"model": model, "weight": a["weight"], "refused": str(e)})
                self._refused(model, a, e)
                continue
            except Exception as e:  # noqa: BLE001 - retried at the next evaluation
                logger.error("traffic controller failed for %s: %s (will retry)", model, e)
                done.append({"model": model, "weight": a["weight"], "error": str(e)})
                continue
            if self._controller_pending.get(model) is a:  # a newer decision may be queued
                self._controller_pending.pop(model, None)
            done.append({"model": model, "weight": a["weight"], "result": res})
            try:  # a restart before this line re-applies the decision (set_traffic is idempotent)
                self.events.append(
                    [
                        (
                            "traffic_applied",
                            time.time(),
                            {"model": model, "version": a["version"], "weight": a["weight"]},
                        )
                    ]
                )
            except Exception as e:  # noqa: BLE001
                logger.warning("could not record the applied traffic change: %s", e)
        return done

    def _refused(self, model: str, action: dict[str, Any], error: Exception) -> None:
        """A permanent refusal of ``action``: persisted (so a restart does not retry it), the
        run held at the weight in force, a ``canary_blocked`` alert raised and delivered."""
        now = time.time()
        logger.warning("traffic change for %s refused: %s (not retried)", model, error)
        msg = getattr(error, "message", None) or str(error)

        def persist(run: dict[str, Any] | None, t: dict[str, Any] | None) -> None:
            payload = {
                "action": {
                    **{k: v for k, v in action.items() if k != "run"},
                    "decision": "blocked",
                    "refused": action["decision"],
                    "error": msg,
                },
                "run": run or action.get("run"),
            }
            events: list[tuple[str, float, dict[str, Any]]] = [("canary", now, payload)]
            if t is not None:
                events.append(("alert", now, t))
            self.events.append(events)

        with self._lock:
            try:
                _, t = self.core.canary_refused(action, msg, now, persist=persist)
            except Exception as e:  # noqa: BLE001 - undone (and not counted): still pending
                # Not durable, so not decided: the run is left as it was and the refused action
                # is retried (and refused, and recorded) at the next evaluation.
                logger.error(
                    "could not persist the refused canary change of %s: %s (will retry)", model, e
                )
                return
            if self._controller_pending.get(model) is action:
                self._controller_pending.pop(model, None)
        if t is not None:
            self.notifier.notify(t)

    def _evaluate_loop(self) -> None:
        interval = self.config.monitor.evaluate_interval_s
        while not self._stop.wait(interval):
            try:
                self._evaluate()
            except Exception:  # noqa: BLE001 - keep evaluating
                logger.exception("monitor evaluation failed")

    def set_traffic_controller(
        self, principal: dict[str, Any] | None, fn: TrafficController | None
    ) -> None:
        """Replace the traffic controller (None: the default, registry ``set_traffic``). Admin
        only: the controller is code that runs inside the monitor."""
        self._require(principal, "admin")
        if fn is not None and not callable(fn):
            raise ValidationError(
                "traffic controller must be callable",
                field="fn",
                rule="callable(model, *, canary_version, canary_weight, reason)",
            )
        self._controller = fn

    def apply_config(self, principal: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        """Replace the monitoring config (rules, drift, canary...) at runtime; persisted.

        Admin only: the config is platform-wide (one tenant's developer must not relax another
        tenant's canary policy or silence its alert rules)."""
        self._require(principal, "admin")
        from raymlp.config import load_config

        cfg = load_config(MonitoringConfig, config, "monitoring config")
        now = time.time()
        payload = cfg.model_dump(mode="json", by_alias=True)
        self.events.append([("config", now, payload)])
        with self._lock:
            transitions = self.core.apply_config(cfg, now)
            if transitions:
                self.events.append([("alert", now, t) for t in transitions])
        old, self.notifier = self.notifier, self._make_notifier(cfg)
        old.close()
        for t in transitions:
            self.notifier.notify(t)
        return {"rules": len(cfg.rules), "resolved": len(transitions)}

    # -- RPC: reads ------------------------------------------------------------------------------
    #
    # Sealed tenants: a non-admin sees only what is labelled with a model of its own tenant (the
    # registry's tenant of the model). Another tenant's model answers exactly like a model that
    # does not exist, and series without a model label (platform-wide aggregates, alerts over
    # every model, feature views) are for admins.

    def _principal(self, credential: dict[str, Any] | None) -> Principal:
        """The verified caller (AuthenticationError when the credential proves nothing)."""
        return self._auth.authenticate(credential)

    def _require(self, principal: dict[str, Any] | None, role: str) -> Principal:
        p = self._principal(principal)
        if not any(_ROLES.index(r) >= _ROLES.index(role) for r in p.roles):
            raise PermissionDeniedError(
                f"{p.name!r} needs role {role!r} on the monitor (has {list(p.roles)!r})",
                principal=p.name,
                required_role=role,
            )
        return p

    def _sees(self, p: Principal, model: str | None) -> bool:
        if "admin" in p.roles:
            return True
        return model is not None and self.core.tenant_of(model) == p.tenant

    def _seer(self, p: Principal) -> Callable[[str | None], bool]:
        """``_sees`` for one call, memoised (a read filters many rows of few models)."""
        memo: dict[str | None, bool] = {}

        def seen(model: str | None) -> bool:
            if model not in memo:
                memo[model] = self._sees(p, model)
            return memo[model]

        return seen

    def _check_model(self, p: Principal, model: str) -> None:
        """NotFoundError unless ``model`` is registered and (for a non-admin) of the caller's
        tenant: the same answer in both cases, so a probe learns nothing."""
        owner = self.core.tenant_of(model)
        if owner is None or ("admin" not in p.roles and owner != p.tenant):
            raise NotFoundError(f"model {model!r} does not exist", kind="model", name=model)

    def report(
        self,
        principal: dict[str, Any] | None,
        model: str,
        start: float | None = None,
        end: float | None = None,
    ) -> dict[str, Any]:
        """The report of ``model`` over [start, end) (default: the last hour). Ranges older
        than the in-memory retention are rebuilt from the prediction log."""
        p = self._require(principal, "viewer")
        self._check_model(p, model)
        now = time.time()
        end = now if end is None else float(end)
        start = end - 3600.0 if start is None else float(start)
        if start >= end:
            raise ValidationError(
                f"start {start} is not before end {end}",
                field="start",
                value=start,
                rule="start < end",
            )
        horizon = now - self.config.monitor.retention.total_seconds()
        if start >= horizon:
            with self._lock:
                rep = self.core.report(model, start, end)
            rep["source"] = "windows"
            return rep
        return self._report_from_log(model, start, end)

    def _report_from_log(self, model: str, start: float, end: float) -> dict[str, Any]:
        preds = self.pred_log.read(start_ts=start, end_ts=end, model=model)
        fbs = self.feedback_log.read(start_ts=start, end_ts=end)
        chunks = (
            table_to_predictions(preds.slice(i, _REPLAY_CHUNK))
            for i in range(0, preds.num_rows, _REPLAY_CHUNK)
        )
        with self._lock:
            alerts = self.core.alerts()
        return self.core.offline_report(model, start, end, chunks, table_to_feedback(fbs), alerts)

    def alerts(
        self, principal: dict[str, Any] | None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Alerts (``state``: pending | firing | resolved | None = all), newest first."""
        p = self._require(principal, "viewer")
        with self._lock:
            rows = self.core.alerts(state)
        seen = self._seer(p)
        return [a for a in rows if seen(a["labels"].get("model"))]

    def resolve_alert(self, principal: dict[str, Any] | None, alert_id: str) -> dict[str, Any]:
        """Resolve a firing alert by id (event alerts such as a canary rollback end this way)."""
        p = self._require(principal, "developer")
        now = time.time()
        with self._lock:
            mine = [a for a in self.core.alerts("firing") if a["id"] == alert_id]
            if not mine or not self._sees(p, mine[0]["labels"].get("model")):
                raise NotFoundError(f"no firing alert {alert_id!r}", kind="alert", name=alert_id)
            snapshot = self.core.decision_snapshot()
            t = self.core.engine.resolve(alert_id, now)
            try:
                self.events.append([("alert", now, t)])
            except Exception:
                self.core.restore_decisions(snapshot, now)  # still firing: the caller retries
                raise
        self.notifier.notify(t)
        return t

    def metrics_url(self, principal: dict[str, Any] | None) -> str:
        """URL of the Prometheus endpoint of this actor (for the scrape config; the endpoint
        itself is infrastructure, unauthenticated, bound to ``monitor.metrics_host``)."""
        self._require(principal, "viewer")
        host = self.config.monitor.metrics_host
        if host in ("0.0.0.0", "::", ""):
            import ray

            host = ray.util.get_node_ip_address()
        return f"http://{host}:{self.metrics_port}/metrics"

    def metrics_text(self, principal: dict[str, Any] | None) -> str:
        """The Prometheus exposition text (what the endpoint serves); for a non-admin only the
        samples labelled with a model of its tenant (and the HELP/TYPE lines)."""
        p = self._require(principal, "viewer")
        text = self.metrics.exposition().decode()
        if "admin" in p.roles:
            return text
        seen = self._seer(p)
        keep = []
        for line in text.splitlines():
            if line.startswith("#"):
                keep.append(line)
                continue
            m = _MODEL_LABEL.search(line)
            if m is not None and seen(m.group(1)):
                keep.append(line)
        return "\n".join(keep) + "\n"

    def gauges(
        self, principal: dict[str, Any] | None, model: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Current gauge values (of one model): ``{series: [{"labels", "value"}]}``."""
        from raymlp.monitoring.prometheus import GAUGES

        p = self._require(principal, "viewer")
        if model is not None:
            self._check_model(p, model)
        seen = self._seer(p)
        out: dict[str, list[dict[str, Any]]] = {}
        for name, rows in self.metrics.gauges.get().items():
            keys = GAUGES[name][1]
            for lv, v in rows:
                labels = dict(zip(keys, lv))
                if (model is None or labels.get("model") == model) and seen(labels.get("model")):
                    out.setdefault(name, []).append({"labels": labels, "value": v})
        return out

    def signal(
        self,
        principal: dict[str, Any] | None,
        metric: str,
        window_s: float = 300.0,
        by: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """One signal's samples now (what an alert rule on it would see)."""
        p = self._require(principal, "viewer")
        with self._lock:
            self.core.signals.reset()
            samples = self.core.signals.series(metric, float(window_s), time.time(), by or ())
        seen = self._seer(p)
        return [
            {"labels": dict(s.labels), "value": s.value, "count": s.count}
            for s in samples
            if seen(dict(s.labels).get("model"))
        ]

    def canary_status(
        self, principal: dict[str, Any] | None, model: str | None = None
    ) -> list[dict[str, Any]]:
        """Canary runs the monitor drives (of one model)."""
        p = self._require(principal, "viewer")
        if model is not None:
            self._check_model(p, model)
        seen = self._seer(p)
        with self._lock:
            return [r for r in self.core.canary.status(model) if seen(r["model"])]

    def stats(self, principal: dict[str, Any] | None) -> dict[str, Any]:
        """Counters of this monitor; a non-admin gets its tenant's models only, and none of
        the platform-wide counts."""
        p = self._require(principal, "viewer")
        seen = self._seer(p)
        st = self.core.state
        out = {
            "models": [m for m in st.models() if seen(m)],
            "last_evaluated_at": self.core.last_evaluated_at,
            "metrics_port": self.metrics_port,
            "controller_pending": sorted(m for m in self._controller_pending if seen(m)),
            "rules": [r.name for r in self.core.engine.rules],
        }
        if "admin" not in p.roles:
            return out
        return {
            **out,
            "records_ingested": st.records_ingested,
            "tracked_requests": st.tracked_requests,
            "pending_feedback": st.pending_feedback,
            "replayed": self.replayed,
            "prediction_log_version": self.pred_log.version(),
            "ray_metrics_mirror": self._mirror is not None,
            "directory_refreshes": self.directory.refreshes,
        }
