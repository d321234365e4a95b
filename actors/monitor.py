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
  free port, see ``metrics_url``) and a ``ray.util.metrics`` mirror (Ray dashboard).

The contract with the Serve gateway (asynchronous, batched; see
``raymlp._private.prediction_logger`` for the client-side :class:`PredictionLogger` that never
blocks the request path):

* ``log_predictions(records, source="gateway", dropped=0)`` — prediction records
  (``raymlp.monitoring.records``): all or nothing; a bad record raises ValidationError naming
  ``records[i].field`` and nothing is written. ``dropped``: records the caller had to drop
  since its last call (buffer full), exported as ``raymlp_prediction_log_dropped_total``.
* ``log_feedback(records)`` — ``{request_id, label, ts}``: joined by request id.

The traffic controller is ``fn(model, *, canary_version, canary_weight, reason)``. By default
it calls the registry actor's ``set_traffic`` command (through ``raymlp._private.rpc``, as the
``monitor`` principal); tests inject their own with ``set_traffic_controller``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pyarrow as pa

from actors._base import PlatformActor
from raymlp._private.rpc import ActorClient, RegistryRPC
from raymlp.config import MonitoringConfig, Principal
from raymlp.errors import PermissionDeniedError, StorageError, ValidationError
from raymlp.monitoring.core import MonitorCore
from raymlp.monitoring.logtable import DeltaLog, EventTable, GroupCommitter
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
_MONITOR_PRINCIPAL = Principal(name="monitor", tenant="default", roles=["admin"])


class MonitorActor(PlatformActor):
    """See the module docstring. Created by ``raymlp up`` as the named actor ``monitor``."""

    def __init__(self, platform_config: dict[str, Any], instance_name: str | None = None) -> None:
        super().__init__(platform_config, instance_name)
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
        self._controller: TrafficController | None = None
        self._controller_pending: dict[str, dict[str, Any]] = {}
        self._registry_rpc: RegistryRPC | None = None
        self._feature_store: ActorClient | None = None
        self._freshness_cache: tuple[float, dict[str, float]] = (0.0, {})
        self._traffic_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="raymlp-monitor-io")
        self.core = MonitorCore(
            s,
            profile_for=self._load_profile,
            metrics=self.metrics,
            freshness=self._freshness,
            traffic_lookup=self._traffic,
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
            elif e["kind"] == "traffic_applied":
                a = self._controller_pending.get(p["model"])
                if a is not None and a["version"] == p["version"] and a["weight"] == p["weight"]:
                    del self._controller_pending[p["model"]]
        for e in events:
            if e["kind"] == "dropped" and e["ts"] >= horizon:
                self.core.note_dropped(
                    e["payload"]["source"], e["payload"]["count"], e["ts"], live=False
                )
        preds = self.pred_log.read(start_ts=horizon)
        for i in range(0, preds.num_rows, _REPLAY_CHUNK):
            self.core.ingest_predictions(
                table_to_predictions(preds.slice(i, _REPLAY_CHUNK)), live=False, now=now
            )
        fbs = self.feedback_log.read(start_ts=horizon)
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
        return Notifier(
            cfg.webhooks,
            registry_sink=self._registry_sink if cfg.deliver_to_registry else None,
            on_outcome=lambda ch, out: self.metrics.notifications.labels(ch, out).inc(),
        )

    def _start_metrics_server(self) -> tuple[Any, int]:
        from prometheus_client import start_http_server

        s = self.config.monitor
        try:
            server, _ = start_http_server(
                s.metrics_port, s.metrics_host, registry=self.metrics.registry
            )
        except OSError as e:
            if not s.metrics_port:
                raise
            logger.error(
                "metrics port %d is taken (%s): serving on a free port instead", s.metrics_port, e
            )
            server, _ = start_http_server(0, s.metrics_host, registry=self.metrics.registry)
        return server, int(server.server_port)

    # -- collaborators (reached lazily; the monitor works without them) ---------------------------

    def _registry(self) -> RegistryRPC:
        """The registry actor, as the ``monitor`` principal (retried across its restarts)."""
        if self._registry_rpc is None:
            actor = ActorClient("registry", self.config.ray.namespace)
            self._registry_rpc = RegistryRPC(actor, _MONITOR_PRINCIPAL)
        return self._registry_rpc

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
                    principal = _MONITOR_PRINCIPAL.model_dump(mode="json")
                    info = self._features().call("describe", view, principal)
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

    def _commit_predictions(self, items: list[tuple[dict[str, Any], str]]) -> None:
        t0 = time.perf_counter()
        by_source: dict[str, list[dict[str, Any]]] = {}
        for rec, source in items:
            by_source.setdefault(source, []).append(rec)
        table = pa.concat_tables([predictions_to_table(r, s) for s, r in by_source.items()])
        self.pred_log.append(table)
        self.metrics.log_commit.labels("prediction_log").observe(time.perf_counter() - t0)
        self.metrics.log_rows.labels("prediction_log").inc(table.num_rows)
        records = [rec for rec, _ in items]
        with self._lock:
            self.core.ingest_predictions(records)
        if self._mirror is not None:
            self._mirror.observe_batch(records)

    def _commit_feedback(self, items: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        self.feedback_log.append(feedback_to_table(items))
        self.metrics.log_commit.labels("feedback").observe(time.perf_counter() - t0)
        self.metrics.log_rows.labels("feedback").inc(len(items))
        with self._lock:
            self.core.ingest_feedback(items)

    # -- RPC: ingest -----------------------------------------------------------------------------

    def log_predictions(
        self, records: list[dict[str, Any]], source: str = "sdk", dropped: int = 0
    ) -> dict[str, Any]:
        """Append prediction records (durable on return); see the module docstring."""
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
        if dropped:
            now = time.time()
            self.events.append([("dropped", now, {"source": source, "count": dropped})])
            with self._lock:
                self.core.note_dropped(source, dropped, now)
        if recs:
            self._pred_commit.submit([(r, source) for r in recs])
        return {"accepted": len(recs), "dropped_reported": dropped}

    def log_feedback(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Append labels (``request_id``, ``label``, ``ts``) and join them to predictions."""
        recs = normalize_feedbacks(records)
        if recs:
            self._fb_commit.submit(recs)
        return {"accepted": len(recs)}

    # -- RPC: evaluation ---------------------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        """Run one evaluation now (also runs every ``evaluate_interval_s``)."""
        now = time.time()
        with self._lock:
            out = self.core.evaluate(now)
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
            if events:
                self.events.append(events)  # persisted before anything acts on them
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

    def _evaluate_loop(self) -> None:
        interval = self.config.monitor.evaluate_interval_s
        while not self._stop.wait(interval):
            try:
                self.evaluate()
            except Exception:  # noqa: BLE001 - keep evaluating
                logger.exception("monitor evaluation failed")

    def set_traffic_controller(self, fn: TrafficController | None) -> None:
        """Replace the traffic controller (None: the default, registry ``set_traffic``)."""
        if fn is not None and not callable(fn):
            raise ValidationError(
                "traffic controller must be callable",
                field="fn",
                rule="callable(model, *, canary_version, canary_weight, reason)",
            )
        self._controller = fn

    def apply_config(self, principal: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        """Replace the monitoring config (rules, drift, canary...) at runtime; persisted."""
        self._require(principal, "developer")
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

    @staticmethod
    def _principal(principal: dict[str, Any] | None) -> Principal:
        return Principal.model_validate(principal) if principal else _MONITOR_PRINCIPAL

    def _require(self, principal: dict[str, Any] | None, role: str) -> Principal:
        p = self._principal(principal)
        order = ["viewer", "developer", "approver", "admin"]
        if not any(order.index(r) >= order.index(role) for r in p.roles):
            raise PermissionDeniedError(
                f"{p.name!r} needs role {role!r}", principal=p.name, required_role=role
            )
        return p

    def _visible(self, p: Principal, model: str | None) -> bool:
        if model is None or "admin" in p.roles:
            return True
        owner = self.core.state.tenants.get(model)
        return owner is None or owner == p.tenant

    def report(
        self,
        principal: dict[str, Any] | None,
        model: str,
        start: float | None = None,
        end: float | None = None,
    ) -> dict[str, Any]:
        """The report of ``model`` over [start, end) (default: the last hour). Ranges older
        than the in-memory retention are rebuilt from the prediction log."""
        p = self._principal(principal)
        if not self._visible(p, model):
            raise PermissionDeniedError(
                f"model {model!r} belongs to another tenant", principal=p.name, model=model
            )
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
        self, principal: dict[str, Any] | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Alerts (``state``: pending | firing | resolved | None = all), newest first."""
        p = self._principal(principal)
        with self._lock:
            rows = self.core.alerts(state)
        return [a for a in rows if self._visible(p, a["labels"].get("model"))]

    def resolve_alert(self, principal: dict[str, Any] | None, alert_id: str) -> dict[str, Any]:
        """Resolve a firing alert by id (event alerts such as a canary rollback end this way)."""
        self._require(principal, "developer")
        now = time.time()
        with self._lock:
            t = self.core.engine.resolve(alert_id, now)
            self.events.append([("alert", now, t)])
        self.notifier.notify(t)
        return t

    def metrics_url(self) -> str:
        """URL of the Prometheus endpoint of this actor."""
        host = self.config.monitor.metrics_host
        if host in ("0.0.0.0", "::", ""):
            import ray

            host = ray.util.get_node_ip_address()
        return f"http://{host}:{self.metrics_port}/metrics"

    def metrics_text(self) -> str:
        """The Prometheus exposition text (what the endpoint serves)."""
        return self.metrics.exposition().decode()

    def gauges(self, model: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Current gauge values (of one model): ``{series: [{"labels", "value"}]}``."""
        from raymlp.monitoring.prometheus import GAUGES

        out: dict[str, list[dict[str, Any]]] = {}
        for name, rows in self.metrics.gauges.get().items():
            keys = GAUGES[name][1]
            for lv, v in rows:
                labels = dict(zip(keys, lv))
                if model is None or labels.get("model") == model:
                    out.setdefault(name, []).append({"labels": labels, "value": v})
        return out

    def signal(
        self, metric: str, window_s: float = 300.0, by: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """One signal's samples now (what an alert rule on it would see)."""
        with self._lock:
            self.core.signals.reset()
            samples = self.core.signals.series(metric, float(window_s), time.time(), by or ())
        return [{"labels": dict(s.labels), "value": s.value, "count": s.count} for s in samples]

    def canary_status(self, model: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return self.core.canary.status(model)

    def stats(self) -> dict[str, Any]:
        st = self.core.state
        return {
            "records_ingested": st.records_ingested,
            "tracked_requests": st.tracked_requests,
            "pending_feedback": st.pending_feedback,
            "models": st.models(),
            "last_evaluated_at": self.core.last_evaluated_at,
            "replayed": self.replayed,
            "prediction_log_version": self.pred_log.version(),
            "metrics_port": self.metrics_port,
            "ray_metrics_mirror": self._mirror is not None,
            "controller_pending": sorted(self._controller_pending),
            "rules": [r.name for r in self.core.engine.rules],
        }
