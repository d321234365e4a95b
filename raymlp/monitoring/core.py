"""The monitor's logic in one object: windows, signals, alert rules, canaries and gauges.

:class:`MonitorCore` is what the ``monitor`` actor wraps (the actor adds durability, threads,
RPC, delivery and the traffic controller). It is pure — no Ray, no storage — so the whole
behaviour is testable in a unit test with a fake clock::

    core = MonitorCore(MonitorSettings(monitoring=cfg), profile_for=lambda m, v: profile)
    core.ingest_predictions(normalize_predictions(batch))
    out = core.evaluate(now=time.time())
    out["transitions"]     # alert transitions to persist and deliver
    out["canary"]          # canary decisions (the actor applies weight changes)

Decisions take effect only once they are durable: ``evaluate(now, persist=fn)`` calls ``fn``
with the outcome before it counts, and when ``fn`` raises the canary runs and alerts are put
back as they were (:meth:`MonitorCore.decision_snapshot`), so the next evaluation decides again.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from typing import Any

from raymlp.config import ModelMonitorSettings, MonitoringConfig, MonitorSettings
from raymlp.monitoring.alerts import AlertEngine
from raymlp.monitoring.canary import CanaryStats, CanaryTracker
from raymlp.monitoring.directory import ModelDirectory
from raymlp.monitoring.live_windows import FeedbackResult, IngestResult, TrafficState
from raymlp.monitoring.prometheus import MonitorMetrics
from raymlp.monitoring.reference import ReferenceProfile
from raymlp.monitoring.report_model import (
    AccuracySummary,
    DriftThresholds,
    MonitorReport,
    PerfStats,
    TimelinePoint,
    VersionAccuracy,
    VersionRoutePerf,
)
from raymlp.monitoring.signals import Signals

__all__ = ["MonitorCore", "PERF_GAUGE_WINDOW_S", "CANARY_SEEN_WINDOW_S"]

#: Window of the windowed performance gauges (error rate, rps, p50/p99).
PERF_GAUGE_WINDOW_S = 300.0
#: Canary traffic this recent starts tracking a canary.
CANARY_SEEN_WINDOW_S = 300.0

TrafficLookup = Callable[[str], Mapping[str, Any] | None]
#: Makes an evaluation's outcome durable (the monitor appends its events); raising undoes it.
Persist = Callable[[dict[str, Any]], None]
#: ``fn(run, alert transition)``: makes a canary refusal durable (raises when it cannot).
RefusalPersist = Callable[[dict[str, Any] | None, dict[str, Any] | None], None]


class MonitorCore:
    """All monitoring state of one platform.

    Args:
        settings: the ``monitor`` section of platform.yaml.
        profile_for: (model, version) → reference profile or None.
        metrics: Prometheus series to update (a private registry if None).
        freshness: () → {feature view: age in seconds}.
        traffic_lookup: model → the registry's traffic state (``canary_weight``...), or None.
        directory: the registry's models and their tenants (:class:`ModelDirectory`). With
            one, only records of registered model versions are admitted (:meth:`admit`) and a
            model's tenant is the registry's; without one (unit tests, throwaway report cores)
            every record is admitted and models have no tenant.
        tenants: the configured tenant names; records naming another tenant are dropped by
            :meth:`admit` (None: any tenant).
    """

    def __init__(
        self,
        settings: MonitorSettings,
        profile_for: Callable[[str, int], ReferenceProfile | None] | None = None,
        metrics: MonitorMetrics | None = None,
        freshness: Callable[[], Mapping[str, float]] | None = None,
        traffic_lookup: TrafficLookup | None = None,
        directory: ModelDirectory | None = None,
        tenants: Collection[str] | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.tenants = frozenset(tenants) if tenants is not None else None
        self.config: MonitoringConfig = settings.monitoring
        self.metrics = metrics or MonitorMetrics()
        self.traffic_lookup = traffic_lookup
        self.state = TrafficState(
            settings.bucket.total_seconds(),
            settings.retention.total_seconds(),
            profile_for=profile_for,
            settings_for=self._model_settings,
            max_tracked_requests=settings.max_tracked_requests,
            out_of_range_tolerance=self.config.drift.out_of_range_tolerance,
        )
        self.signals = Signals(self.state, self.config.drift, freshness)
        self.engine = AlertEngine(self.config.rules, self.config.repeat_interval.total_seconds())
        self.canary = CanaryTracker(self.config.canary)
        self.last_evaluated_at: float | None = None

    def _model_settings(self, model: str) -> ModelMonitorSettings:
        return self.config.models.get(model) or ModelMonitorSettings()

    # -- config ---------------------------------------------------------------------------------

    def apply_config(self, cfg: MonitoringConfig, now: float | None = None) -> list[dict[str, Any]]:
        """Swap in a new monitoring config; returns transitions of alerts it resolves."""
        now = time.time() if now is None else now
        self.config = cfg
        self.signals.drift_settings = cfg.drift
        self.state.tolerance = cfg.drift.out_of_range_tolerance
        self.engine.repeat_interval_s = cfg.repeat_interval.total_seconds()
        self.canary.policy = cfg.canary
        return self.engine.set_rules(cfg.rules, now)

    # -- ingest ----------------------------------------------------------------------------------

    def tenant_of(self, model: str) -> str | None:
        """The registry's tenant of ``model`` (None: not registered, or no directory)."""
        return self.directory.tenant(model) if self.directory is not None else None

    def admit(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records that may create monitoring state: those of registered model versions
        and configured tenants. The others are counted in
        ``raymlp_unknown_model_records_total{reason}`` (one series per reason, never one per
        name) and dropped, so made-up names cannot grow the windows or the metrics."""
        if self.directory is None and self.tenants is None:
            return records
        kept: list[dict[str, Any]] = []
        unknown = {"unregistered_model": 0, "unknown_tenant": 0}
        for r in records:
            if self.tenants is not None and r["tenant"] not in self.tenants:
                unknown["unknown_tenant"] += 1
            elif self.directory is not None and not self.directory.admits(
                r["model"], r["version"]
            ):
                unknown["unregistered_model"] += 1
            else:
                kept.append(r)
        for reason, n in unknown.items():
            if n:
                self.metrics.unknown_records.labels(reason).inc(n)
        return kept

    def ingest_predictions(
        self, records: list[dict[str, Any]], live: bool = True, now: float | None = None
    ) -> IngestResult:
        """Fold normalised records in; ``live`` also counts them in the Prometheus counters
        (a replay after a restart does not)."""
        res = self.state.ingest(records, now)
        if live:
            self.metrics.observe_batch(records)
            for (model, feat, kind), n in res.violations.items():
                # a feature name comes from the request: bounded per model like error codes
                feat = self.metrics.budget(("feature", model), feat)
                self.metrics.violations.labels(model, feat, kind).inc(n)
            for model, n in res.feedback_joined.items():  # labels that waited for these
                self.metrics.feedback.labels(model).inc(n)
        return res

    def ingest_feedback(
        self, records: list[dict[str, Any]], live: bool = True, now: float | None = None
    ) -> FeedbackResult:
        res = self.state.ingest_feedback(records, now)
        if live:
            for model, n in res.by_model.items():
                self.metrics.feedback.labels(model).inc(n)
        return res

    def note_dropped(self, source: str, count: int, now: float, live: bool = True) -> None:
        source = self.metrics.budget(("source",), source)  # a caller-chosen name: bounded
        self.state.note_dropped(source, count, now)
        if live and count > 0:
            self.metrics.log_dropped.labels(source).inc(count)

    # -- evaluation ------------------------------------------------------------------------------

    def _canary_stats(self, run: Any, start: float, end: float) -> tuple[CanaryStats, CanaryStats]:
        cells = self.state.versions(run.model, start, end)
        c = cells.get((str(run.version), "canary"))
        s = cells.get((str(run.stable_version), "primary")) if run.stable_version else None

        def stats(cell: Any) -> CanaryStats:
            if cell is None:
                return CanaryStats()
            return CanaryStats(
                cell.requests,
                cell.errors,
                cell.latency_quantile(0.99),
                cell.prob_hist.copy() if cell.prob_count else None,
            )

        return stats(c), stats(s)

    def _lookup_traffic(self, model: str) -> dict[str, Any]:
        """The registry's traffic state of ``model`` ({} when unknown or unreachable)."""
        if self.traffic_lookup is None:
            return {}
        try:
            return dict(self.traffic_lookup(model) or {})
        except Exception:  # noqa: BLE001 - the registry may not keep traffic state yet
            return {}

    def _start_canaries(self, now: float) -> list[dict[str, Any]]:
        started = []
        for model in self.state.models():
            rows = self.state.versions(model, now - CANARY_SEEN_WINDOW_S, now + 1)
            canaries = [int(v) for (v, r), c in rows.items() if r == "canary" and v and c.requests]
            if not canaries:
                continue
            version = max(canaries)
            run = self.canary.runs.get(model)
            traffic = self._lookup_traffic(model)
            # the registry's weight counts only for this very canary version (an empty traffic
            # state reads weight 0 with no canary version)
            same = str(traffic.get("canary_version")) == str(version)
            weight = traffic.get("canary_weight") if same else None
            # a version already decided is analysed again only when someone re-enabled it
            # (the registry shows it as the canary with a weight again after a rollback)
            restart = bool(
                run is not None
                and run.version == version
                and run.status == "rolled_back"
                and str(traffic.get("canary_version")) == str(version)
                and (weight or 0) > 0
            )
            if run is not None and run.version == version and not restart:
                if (
                    run.blocked is not None
                    and str(traffic.get("canary_version")) == str(version)
                    and weight is not None
                ):
                    self.canary.unblock(model, float(weight), now)
                continue
            stable = self.state.primary_version(model, now - CANARY_SEEN_WINDOW_S, now + 1)
            # the first step began with the first canary request (bucket resolution)
            seen = self.state.perf_timeline(
                model, now - CANARY_SEEN_WINDOW_S, now + 1, version=str(version), route="canary"
            )
            began = min((self.state.perf_store.start_of(i) for i in seen), default=now)
            if restart:
                began = now  # judge only traffic after the re-enable
            new = self.canary.start(
                model,
                version,
                stable,
                max(began, now - CANARY_SEEN_WINDOW_S),
                weight,
                steps=traffic.get("steps") or None,
                restart=restart,
            )
            if new is not None:
                started.append(
                    {
                        "model": model,
                        "version": version,
                        "decision": "start",
                        "weight": new.weight,
                        "previous_weight": None,
                        "reason": f"canary v{version} seen (stable v{stable})",
                        "changed": False,
                        "run": new.to_dict(),
                        "metrics": {},
                        "regression": False,
                        "verdict": "start",
                    }
                )
        return started

    def decision_snapshot(self) -> tuple[Any, Any, float | None]:
        """A copy of the state that decisions move (canary runs, alerts, last evaluation), for
        :meth:`restore_decisions` when they could not be made durable."""
        return copy.deepcopy(self.canary), copy.deepcopy(self.engine), self.last_evaluated_at

    def restore_decisions(self, snapshot: tuple[Any, Any, float | None], now: float) -> None:
        """Put back a :meth:`decision_snapshot` (and the gauges that show it)."""
        self.canary, self.engine, self.last_evaluated_at = snapshot
        self.metrics.gauges.set(self.gauge_values(now))

    def evaluate(self, now: float | None = None, persist: Persist | None = None) -> dict[str, Any]:
        """One pass: canaries, alert rules, gauges. Returns ``{"transitions", "canary"}``.

        With ``persist``, the outcome is handed to it before anything counts it; if it raises,
        the canary runs and alerts are restored to what they were before this pass (the error
        propagates) and the next pass decides again."""
        now = time.time() if now is None else now
        snapshot = self.decision_snapshot() if persist is not None else None
        try:
            out = self._decide(now)
            if persist is not None:
                persist(out)
        except BaseException:
            if snapshot is not None:
                self.restore_decisions(snapshot, now)
            raise
        for action in out["canary"]:  # counted once durable: a retried pass is not counted twice
            if action["decision"] not in ("hold", "start"):
                self.metrics.canary_decisions.labels(action["model"], action["decision"]).inc()
        self.metrics.gauges.set(self.gauge_values(now))
        self.last_evaluated_at = now
        return out

    def _decide(self, now: float) -> dict[str, Any]:
        self.state.prune(now)
        self.signals.reset()
        transitions: list[dict[str, Any]] = []
        canary = self._start_canaries(now) if self.config.canary.enabled else []
        for action in self.canary.evaluate(now, self._canary_stats):
            canary.append(action)
            if action["regression"]:
                t = self.engine.fire(
                    "canary_rollback" if action["decision"] == "rollback" else "canary_regression",
                    "critical",
                    {"model": action["model"], "version": str(action["version"])},
                    f"canary v{action['version']} of {action['model']} regressed: "
                    f"{action['reason']}",
                    now,
                    value=action["metrics"].get("error_rate_delta"),
                    annotations={"metrics": action["metrics"]},
                )
                if t:
                    transitions.append(t)
        transitions.extend(
            self.engine.evaluate(
                now,
                lambda rule: self.signals.series(
                    rule.metric, rule.window.total_seconds(), now, rule.by
                ),
            )
        )
        return {"transitions": transitions, "canary": canary}

    def canary_refused(
        self,
        action: Mapping[str, Any],
        error: str,
        now: float,
        persist: RefusalPersist | None = None,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The traffic controller refused a canary decision for good (e.g. the registry's
        ``max_unapproved_canary_weight`` for an unapproved version): an advance is undone
        (the run stays at the weight it has and is ``blocked``: it is not advanced again until
        someone changes the weight, e.g. after an approval) and a ``canary_blocked`` alert
        fires. Returns (the run as a dict, the alert transition or None).

        With ``persist`` (called with both before anything counts them), like :meth:`evaluate`:
        if it raises, the run and the alerts are put back as they were, the refusal is not
        counted in ``raymlp_canary_decisions_total{decision="blocked"}`` and the error
        propagates; only a refusal that stands is counted."""
        model, version = str(action["model"]), int(action["version"])
        snapshot = self.decision_snapshot() if persist is not None else None
        try:
            run = self.canary.block(
                model, version, action.get("previous_weight"), action["decision"], error, now
            )
            t = self.engine.fire(
                "canary_blocked",
                "warning",
                {"model": model, "version": str(version)},
                f"canary {action['decision']} of {model} v{version} to {action['weight']:g}% "
                f"was refused: {error}",
                now,
                value=float(action["weight"]),
                annotations={"decision": action["decision"], "error": error},
            )
            out = (run.to_dict() if run is not None else None), t
            if persist is not None:
                persist(*out)
        except BaseException:
            if snapshot is not None:
                self.restore_decisions(snapshot, now)
            raise
        self.metrics.canary_decisions.labels(model, "blocked").inc()
        return out

    def gauge_values(self, now: float) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The gauge snapshot at ``now``: ``{series name: [(labels, value), ...]}``."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}

        def add(name: str, labels: dict[str, str], value: float | None) -> None:
            if value is not None:
                out.setdefault(name, []).append((labels, float(value)))

        w = PERF_GAUGE_WINDOW_S
        for (model, version, route), c in self.state.perf(
            now - w, now, by=("version", "route")
        ).items():
            lab = {"model": model, "version": version, "route": route}
            add("raymlp_error_rate", lab, c.error_rate)
            add("raymlp_requests_per_second", lab, c.requests / w)
            add("raymlp_prediction_latency_p50_seconds", lab, c.latency_quantile(0.5))
            add("raymlp_prediction_latency_p99_seconds", lab, c.latency_quantile(0.99))
        dw = self.config.drift.window.total_seconds()
        for (model, version), ac in self.state.accuracy(now - dw, now, by=("version",)).items():
            add("raymlp_model_accuracy", {"model": model, "version": version}, ac.accuracy)
            add("raymlp_model_auc", {"model": model, "version": version}, ac.auc)
        for model in self.state.models():
            rows = self.signals.drift_rows(model, now - dw, now)
            if rows is not None:
                for r in rows["features"]:
                    lab = {"model": model, "feature": r["feature"]}
                    add("raymlp_feature_drift_psi", lab, r["psi"])
                    add("raymlp_feature_drift_ks", lab, r["ks"])
                    add("raymlp_feature_drift_ks_pvalue", lab, r["ks_p"])
                    add("raymlp_feature_drift_wasserstein", lab, r["wasserstein"])
                    add("raymlp_feature_drift_js", lab, r["js"])
                    add("raymlp_feature_missing_ratio", lab, r["missing_ratio"])
                    add("raymlp_feature_out_of_range_ratio", lab, r["out_of_range_ratio"])
                    if r["n"]:
                        add("raymlp_feature_drifted", lab, float(r["drifted"]))
                if rows["prediction"]:
                    add("raymlp_prediction_drift_psi", {"model": model}, rows["prediction"]["psi"])
                if rows["records"]:
                    add(
                        "raymlp_schema_violation_ratio",
                        {"model": model},
                        rows["violation_records"] / rows["records"],
                    )
            fair = self.signals.fairness(model, now - dw, now)
            if fair["attribute"]:
                add(
                    "raymlp_fairness_disparate_impact",
                    {"model": model, "attribute": fair["attribute"]},
                    fair["disparate_impact"],
                )
        for s in self.signals.series("feature_freshness_seconds", dw, now):
            add("raymlp_feature_view_freshness_seconds", dict(s.labels), s.value)
        for (rule, sev), n in self.engine.firing_counts().items():
            add("raymlp_alerts_firing", {"rule": rule, "severity": sev}, n)
        for run in self.canary.runs.values():
            add(
                "raymlp_canary_weight",
                {"model": run.model, "version": str(run.version)},
                run.weight,
            )
        add("raymlp_feedback_pending", {}, self.state.pending_feedback)
        return out

    # -- reads ------------------------------------------------------------------------------------

    def monitor_report(self, model: str, start: float, end: float) -> MonitorReport:
        """Everything about one model over [start, end), from the windows."""
        self.signals.reset()
        st = self.state
        seconds = max(end - start, 1e-9)
        total = st.perf(start, end, model).get((model,))
        drift = self.signals.drift_rows(model, start, end)
        if drift is not None:
            drift = {**drift, "drifted": [r["feature"] for r in drift["features"] if r["drifted"]]}
        acc_all = st.accuracy(start, end, model).get((model,))
        accuracy = None
        if acc_all is not None:
            accuracy = AccuracySummary(
                labelled=acc_all.labelled,
                scored=acc_all.scored,
                accuracy=acc_all.accuracy,
                auc=acc_all.auc,
                by_version=[
                    VersionAccuracy(k[1], c.labelled, c.accuracy, c.auc)
                    for k, c in sorted(st.accuracy(start, end, model, by=("version",)).items())
                ],
            )
        run = self.canary.runs.get(model)
        d = self.config.drift
        return MonitorReport(
            model=model,
            tenant=self.tenant_of(model),
            start=start,
            end=end,
            generated_at=time.time(),
            bucket_s=st.bucket_s,
            traffic=PerfStats.of(total, seconds) if total is not None else None,
            by_version_route=[
                VersionRoutePerf.of_key(v, r, c, seconds)
                for (v, r), c in sorted(st.versions(model, start, end).items())
            ],
            timeline=[
                TimelinePoint.of_bucket(st.perf_store.start_of(i), c, st.bucket_s)
                for i, c in sorted(st.perf_timeline(model, start, end).items())
            ],
            drift=drift,
            accuracy=accuracy,
            fairness=self.signals.fairness(model, start, end),
            alerts=[
                a
                for a in self.alerts()
                if a["labels"].get("model") == model
                and (a["state"] != "resolved" or (a["resolved_at"] or 0) >= start)
            ],
            canary=run.to_dict() if run is not None else None,
            thresholds=DriftThresholds(
                psi=d.psi_threshold,
                wasserstein=d.wasserstein_threshold,
                js=d.js_threshold,
                min_samples=d.min_samples,
                p_value=d.p_value,
            ),
        )

    def offline_monitor_report(
        self,
        model: str,
        start: float,
        end: float,
        predictions: Iterable[list[dict[str, Any]]],
        feedback: list[dict[str, Any]],
        alerts: list[dict[str, Any]] | None = None,
    ) -> MonitorReport:
        """A report over a range the windows no longer hold, from log records (chunks of
        normalised predictions, and labels) folded into a throwaway core."""
        span = max(end - start, self.settings.bucket.total_seconds())
        s = self.settings.model_copy(
            update={"monitoring": self.config, "retention": timedelta(seconds=span + 60)}
        )
        tmp = MonitorCore(s, profile_for=self.state._profile_fn)
        for chunk in predictions:
            tmp.ingest_predictions(chunk, live=False, now=end)
        tmp.ingest_feedback(feedback, live=False)
        rep = tmp.monitor_report(model, start, end)
        rep.alerts = [
            a
            for a in (alerts if alerts is not None else self.alerts())
            if a["labels"].get("model") == model
            and a["started_at"] <= end
            and (a["resolved_at"] is None or a["resolved_at"] >= start)
        ]
        rep.source = "prediction_log"
        rep.tenant = self.tenant_of(model)
        return rep

    # The wire forms: what the monitor actor returns to the SDK (and the CLI prints as JSON).

    def report(self, model: str, start: float, end: float) -> dict[str, Any]:
        """:meth:`monitor_report` as its JSON-able dict (:meth:`MonitorReport.to_dict`)."""
        return self.monitor_report(model, start, end).to_dict()

    def offline_report(
        self,
        model: str,
        start: float,
        end: float,
        predictions: Iterable[list[dict[str, Any]]],
        feedback: list[dict[str, Any]],
        alerts: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """:meth:`offline_monitor_report` as its JSON-able dict."""
        return self.offline_monitor_report(
            model, start, end, predictions, feedback, alerts
        ).to_dict()

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        return self.engine.alerts(state)
