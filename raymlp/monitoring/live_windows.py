"""The monitor's in-memory model of recent traffic: windows of performance, drift, quality,
accuracy and fairness cells, plus the request index that joins delayed labels.

:class:`TrafficState` is pure logic (no Ray, no storage): the monitor actor feeds it the records
it has durably logged, and rebuilds it after a restart by feeding it the log again. Reference
profiles and per-model settings come from callables, so tests pass plain functions::

    state = TrafficState(bucket_s=60, retention_s=6 * 3600,
                         profile_for=lambda model, version: profile)
    state.ingest(normalize_predictions(batch))
    state.ingest_feedback(normalize_feedbacks(labels))
    state.perf(now - 300, now)[("customer-churn",)].error_rate
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import numpy as np

from raymlp.config import ModelMonitorSettings
from raymlp.monitoring.accuracy import is_positive, label_outcome
from raymlp.monitoring.drift import FeatureCell, observe, observe_rejected
from raymlp.monitoring.records import RESPONSE_ROUTES, category_key
from raymlp.monitoring.reference import ReferenceProfile
from raymlp.monitoring.windows import (
    AccuracyCell,
    BucketStore,
    CountCell,
    FairnessCell,
    PerfCell,
)

__all__ = ["TrafficState", "IngestResult", "FeedbackResult", "SPLIT_FIELDS"]

logger = logging.getLogger(__name__)

#: Record fields a performance/accuracy series can be split by (position in the cell key).
SPLIT_FIELDS = {"version": 1, "route": 2, "tenant": 3}
_MISSING_SLICE = "(missing)"
_PROFILE_RETRY_S = 30.0

ProfileFn = Callable[[str, int], ReferenceProfile | None]
SettingsFn = Callable[[str], ModelMonitorSettings]


@dataclass
class IngestResult:
    """What one batch added (for counters): requests and violations by label set."""

    requests: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    errors: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict)
    violations: dict[tuple[str, str, str], int] = field(default_factory=dict)  # model, feat, kind
    feedback_joined: dict[str, int] = field(default_factory=dict)  # model -> labels joined


@dataclass
class FeedbackResult:
    matched: int = 0
    pending: int = 0
    duplicate: int = 0
    mismatched: int = 0  # the label names another model than the request's: ignored
    by_model: dict[str, int] = field(default_factory=dict)


class TrafficState:
    """Windows of one monitor (all models).

    Args:
        bucket_s / retention_s: time resolution and horizon of the windows.
        profile_for: (model, version) → reference profile, or None if the version has none.
        settings_for: model → its :class:`ModelMonitorSettings` (fairness attribute...).
        max_tracked_requests: request ids kept for joining labels (oldest dropped first).
        out_of_range_tolerance: see ``DriftSettings.out_of_range_tolerance``.
    """

    def __init__(
        self,
        bucket_s: float,
        retention_s: float,
        profile_for: ProfileFn | None = None,
        settings_for: SettingsFn | None = None,
        max_tracked_requests: int = 200_000,
        out_of_range_tolerance: float = 0.0,
    ) -> None:
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self._profile_fn = profile_for or (lambda m, v: None)
        self._settings_fn = settings_for or (lambda m: ModelMonitorSettings())
        self.max_tracked = max_tracked_requests
        self.tolerance = out_of_range_tolerance
        self.perf_store = BucketStore(bucket_s, retention_s)
        self.feature_store = BucketStore(bucket_s, retention_s)
        self.accuracy_store = BucketStore(bucket_s, retention_s)
        self.fairness_store = BucketStore(bucket_s, retention_s)
        self.dropped_store = BucketStore(bucket_s, retention_s)
        # request_id -> [model, version, route, tenant, prediction, probability, slice, labelled]
        self._index: OrderedDict[str, list[Any]] = OrderedDict()
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._profiles: dict[tuple[str, int], tuple[ReferenceProfile | None, float]] = {}
        self.records_ingested = 0

    # -- reference profiles --------------------------------------------------------------------

    def profile(self, model: str, version: int | None) -> ReferenceProfile | None:
        """The cached reference profile of a version (a miss is retried after 30 s)."""
        if version is None:
            return None
        key = (model, int(version))
        hit = self._profiles.get(key)
        now = time.monotonic()
        if hit is not None and (hit[0] is not None or now - hit[1] < _PROFILE_RETRY_S):
            return hit[0]
        try:
            prof = self._profile_fn(model, int(version))
        except Exception:  # a broken profile must not stop the log: no drift for it
            logger.exception("cannot load the reference profile of %s v%s", model, version)
            prof = None
        self._profiles[key] = (prof, now)
        return prof

    def settings(self, model: str) -> ModelMonitorSettings:
        return self._settings_fn(model)

    # -- ingest ---------------------------------------------------------------------------------

    def _slice_value(self, model: str, version: int | None, feats: dict[str, Any]) -> str | None:
        attr = self.settings(model).fairness_attribute
        if not attr:
            return None
        v = feats.get(attr)
        prof = self.profile(model, version)
        if (
            prof is not None
            and attr in prof.numeric
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        ):
            e = prof.numeric[attr].psi_edges
            if e.size >= 2:
                i = min(int(np.searchsorted(e[1:-1], v, side="right")), e.size - 2)
                return f"[{e[i]:g}, {e[i + 1]:g}{']' if i == e.size - 2 else ')'}"
        return category_key(v) or _MISSING_SLICE

    def ingest(self, records: Iterable[dict[str, Any]], now: float | None = None) -> IngestResult:
        """Fold normalised prediction records in (records beyond the retention are skipped)."""
        res = IngestResult()
        perf_groups: dict[tuple[int, tuple], list[dict]] = {}
        feat_groups: dict[tuple[int, str, int], list[dict]] = {}
        for r in records:
            b = self.perf_store.index(r["ts"])
            if not self.perf_store.accepts(b, now):
                continue
            version_label = "" if r["version"] is None else str(r["version"])
            key = (r["model"], version_label, r["route"], r["tenant"])
            perf_groups.setdefault((b, key), []).append(r)
            if r["version"] is not None:
                feat_groups.setdefault((b, r["model"], r["version"]), []).append(r)
            if r["route"] in RESPONSE_ROUTES:
                self._track(r, b, res)
            self.records_ingested += 1
        for (b, key), rs in perf_groups.items():
            n = len(rs)
            lat = np.array(
                [np.nan if x["latency_ms"] is None else x["latency_ms"] / 1000.0 for x in rs]
            )
            prob = np.array([np.nan if x["probability"] is None else x["probability"] for x in rs])
            codes: dict[str, int] = {}
            for x in rs:
                if x["status"] == "error":
                    c = x["error_code"] or "error"
                    codes[c] = codes.get(c, 0) + 1
            errors = sum(codes.values())
            self.perf_store.cell(b, key, PerfCell).add_batch(lat, errors, codes, prob, n)
            res.requests[key] = res.requests.get(key, 0) + n
            for c, k in codes.items():
                ek = (*key, c)
                res.errors[ek] = res.errors.get(ek, 0) + k
        for (b, model, version), rs in feat_groups.items():
            prof = self.profile(model, version)
            batch = FeatureCell.empty(prof)
            ok = [x for x in rs if x["status"] == "ok"]
            if prof is not None and ok:
                observe(
                    prof,
                    batch,
                    [x["features"] for x in ok],
                    [x["probability"] for x in ok],
                    self.tolerance,
                )
            observe_rejected(batch, [x["error_code"] for x in rs if x["status"] == "error"])
            if batch.records == 0:
                continue
            self.feature_store.cell(b, (model, version), partial(FeatureCell.empty, prof)).merge(
                batch
            )
            for (feat, kind), k in batch.violations.items():
                vk = (model, feat, kind)
                res.violations[vk] = res.violations.get(vk, 0) + k
        return res

    def _track(self, r: dict[str, Any], b: int, res: IngestResult) -> None:
        sl = self._slice_value(r["model"], r["version"], r["features"])
        pred_pos = None
        if r["status"] == "ok":
            pred_pos = (
                r["probability"] >= 0.5
                if r["probability"] is not None
                else is_positive(r["prediction"], self.settings(r["model"]).positive_label)
            )
        if sl is not None:
            fc = self.fairness_store.cell(b, (r["model"], sl), FairnessCell)
            fc.requests += 1
            fc.predicted_positive += int(bool(pred_pos))
        if r["status"] != "ok":
            return
        entry = [
            r["model"],
            r["version"],
            r["route"],
            r["tenant"],
            r["prediction"],
            r["probability"],
            sl,
            False,
        ]
        rid = r["request_id"]
        self._index[rid] = entry
        self._index.move_to_end(rid)
        while len(self._index) > self.max_tracked:
            self._index.popitem(last=False)
        fb = self._pending.pop(rid, None)
        if fb is not None and fb.get("model") not in (None, r["model"]):
            fb = None  # a label is bound to the model that answered the request
        if fb is not None:
            self._join(entry, fb)
            res.feedback_joined[r["model"]] = res.feedback_joined.get(r["model"], 0) + 1

    # -- feedback --------------------------------------------------------------------------------

    def ingest_feedback(
        self, feedback: Iterable[dict[str, Any]], now: float | None = None
    ) -> FeedbackResult:
        """Join labels to their predictions by request id. A label whose prediction has not
        arrived yet waits (bounded) for it; a second label for a request is ignored."""
        res = FeedbackResult()
        for fb in feedback:
            entry = self._index.get(fb["request_id"])
            if entry is None:
                self._pending[fb["request_id"]] = fb
                while len(self._pending) > self.max_tracked:
                    self._pending.popitem(last=False)
                res.pending += 1
                continue
            if entry[7]:
                res.duplicate += 1
                continue
            if fb.get("model") is not None and fb["model"] != entry[0]:
                res.mismatched += 1  # a label is bound to the model that answered the request
                continue
            self._join(entry, fb)
            res.matched += 1
            res.by_model[entry[0]] = res.by_model.get(entry[0], 0) + 1
        return res

    def _join(self, entry: list[Any], fb: dict[str, Any]) -> None:
        model, version, route, tenant, prediction, prob, sl, _ = entry
        entry[7] = True
        b = self.accuracy_store.index(fb["ts"])
        if not self.accuracy_store.accepts(b):
            return
        pos_label = self.settings(model).positive_label
        correct, label_pos, pred_pos = label_outcome(prediction, prob, fb["label"], pos_label)
        v = "" if version is None else str(version)
        self.accuracy_store.cell(b, (model, v, route, tenant), AccuracyCell).add(
            correct, label_pos, prob
        )
        if sl is not None:
            self.fairness_store.cell(b, (model, sl), FairnessCell).add_label(
                correct, label_pos, pred_pos
            )

    def note_dropped(self, source: str, count: int, ts: float) -> None:
        """Records a client (``source``) dropped because its buffer was full."""
        if count > 0:
            self.dropped_store.cell(self.dropped_store.index(ts), source, CountCell).count += count

    def dropped(self, start: float | None, end: float | None) -> dict[str, int]:
        return {
            cast(str, k): c.count  # keyed by source
            for k, c in self.dropped_store.merge(start, end, CountCell).items()
        }

    @property
    def pending_feedback(self) -> int:
        return len(self._pending)

    @property
    def tracked_requests(self) -> int:
        return len(self._index)

    # -- queries ----------------------------------------------------------------------------------

    @staticmethod
    def _by_key(model: str | None, by: Iterable[str]) -> Callable[[Hashable], Hashable | None]:
        pos = [SPLIT_FIELDS[b] for b in by]

        def key_fn(key: Hashable) -> Hashable | None:
            k = key  # (model, version, route, tenant)
            if model is not None and k[0] != model:  # type: ignore[index]
                return None
            return (k[0], *(k[p] for p in pos))  # type: ignore[index]

        return key_fn

    def perf(
        self,
        start: float | None,
        end: float | None,
        model: str | None = None,
        by: Iterable[str] = (),
        routes: Iterable[str] | None = None,
    ) -> dict[tuple, PerfCell]:
        """Merged performance cells keyed ``(model, *by)`` (``routes``: only these routes)."""
        key_fn = self._by_key(model, by)
        allowed = set(routes) if routes is not None else None

        def fn(key: Hashable) -> Hashable | None:
            if allowed is not None and key[2] not in allowed:  # type: ignore[index]
                return None
            return key_fn(key)

        return self.perf_store.merge(start, end, PerfCell, fn)  # type: ignore[return-value]

    def perf_timeline(
        self,
        model: str,
        start: float | None,
        end: float | None,
        version: str | None = None,
        route: str | None = None,
    ) -> dict[int, PerfCell]:
        """Per bucket, the model's (or one version's / route's) merged performance."""

        def fn(key: Hashable) -> Hashable | None:
            m, v, r, _ = cast("tuple[str, str, str, str]", key)
            if (
                m != model
                or (version is not None and v != version)
                or (route is not None and r != route)
            ):
                return None
            return m

        return self.perf_store.timeline(start, end, PerfCell, fn)

    def accuracy(
        self,
        start: float | None,
        end: float | None,
        model: str | None = None,
        by: Iterable[str] = (),
    ) -> dict[tuple, AccuracyCell]:
        """Merged accuracy cells keyed ``(model, *by)`` (by label arrival time)."""
        return self.accuracy_store.merge(
            start,
            end,
            AccuracyCell,  # type: ignore[return-value]
            self._by_key(model, by),
        )

    def versions(
        self, model: str, start: float | None, end: float | None
    ) -> dict[tuple[str, str], PerfCell]:
        """Merged performance per (version, route) of one model."""
        cells = self.perf(start, end, model, by=("version", "route"))
        return {(k[1], k[2]): c for k, c in cells.items()}

    def primary_version(self, model: str, start: float | None, end: float | None) -> int | None:
        """The version that answered most requests on the primary route (else on any)."""
        rows = self.versions(model, start, end)
        for routes in (("primary",), tuple(RESPONSE_ROUTES)):
            counts: dict[str, int] = {}
            for (v, r), c in rows.items():
                if v and r in routes:
                    counts[v] = counts.get(v, 0) + c.requests
            if counts:
                return int(max(counts.items(), key=lambda kv: (kv[1], int(kv[0])))[0])
        return None

    def features(
        self, model: str, version: int, start: float | None, end: float | None
    ) -> FeatureCell:
        """The merged feature cell of one model version."""
        prof = self.profile(model, version)
        merged = self.feature_store.merge(
            start,
            end,
            lambda: FeatureCell.empty(prof),
            lambda k: k if k == (model, version) else None,
        )
        return merged.get((model, version)) or FeatureCell.empty(prof)

    def fairness(
        self, model: str, start: float | None, end: float | None
    ) -> dict[str, FairnessCell]:
        def by_slice(key: Hashable) -> Hashable | None:
            k = cast("tuple[str, str]", key)  # (model, slice)
            return k[1] if k[0] == model else None

        merged = self.fairness_store.merge(start, end, FairnessCell, by_slice)
        return merged  # type: ignore[return-value]

    def models(self) -> list[str]:
        """Models with traffic inside the retention."""
        return sorted(
            {cast("tuple[str, ...]", k)[0] for _, k, _ in self.perf_store.items(None, None)}
        )

    def prune(self, now: float) -> None:
        for s in (
            self.perf_store,
            self.feature_store,
            self.accuracy_store,
            self.fairness_store,
            self.dropped_store,
        ):
            s.prune(now)
