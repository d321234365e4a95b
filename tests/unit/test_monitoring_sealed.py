"""The monitor's sealed and bounded state without Ray: the registry's directory of models
(TTL and negative cache), admission of records (only registered model versions and known
tenants), bounded labels, feedback bound to its request's model, and a canary advance that
the registry refuses."""

from __future__ import annotations

import uuid

import pytest

from raymlp.config import MonitorSettings
from raymlp.monitoring import MonitorCore, normalize_feedbacks, normalize_predictions
from raymlp.monitoring.directory import ModelDirectory, ModelEntry
from raymlp.monitoring.prometheus import OTHER_LABEL, LabelBudget
from tests.unit.test_monitoring_core import NOW, PROFILE, _cfg, _records


class _Registry:
    """A stand-in for the registry actor's ``list_models`` that counts its calls."""

    def __init__(self, models: dict[str, ModelEntry]) -> None:
        self.models = models
        self.calls = 0
        self.down = False

    def __call__(self) -> dict[str, ModelEntry]:
        self.calls += 1
        if self.down:
            raise ConnectionError("registry down")
        return dict(self.models)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_directory_caches_hits_and_rate_limits_misses():
    reg, clock = _Registry({"churn": ModelEntry("acme", 2)}), _Clock()
    d = ModelDirectory(reg, ttl_s=30, miss_ttl_s=2, clock=clock)
    assert d.tenant("churn") == "acme" and reg.calls == 1
    # 1,000 made-up names within the negative-cache TTL: not one more registry call
    assert all(d.tenant(f"made-up-{i}") is None for i in range(1000))
    assert reg.calls == 1
    assert d.admits("churn", 2) and not d.admits("churn", 3) and d.admits("churn", None)
    # a model registered since the snapshot is found once the negative TTL has passed
    reg.models["fresh"] = ModelEntry("beta", 1)
    assert d.tenant("fresh") is None
    clock.t = 2.5
    assert d.tenant("fresh") == "beta" and reg.calls == 2
    # a registry outage keeps the last snapshot (and is not hammered)
    reg.down = True
    clock.t = 100.0
    assert d.tenant("churn") == "acme" and reg.calls == 3
    assert d.tenant("churn") == "acme" and reg.calls == 3


def test_directory_knows_nothing_before_its_first_snapshot():
    reg = _Registry({"churn": ModelEntry("acme", 1)})
    reg.down = True
    d = ModelDirectory(reg, clock=_Clock())
    assert d.tenant("churn") is None and not d.admits("churn", 1)  # fail closed


def _sealed_core(reg: _Registry) -> MonitorCore:
    return MonitorCore(
        MonitorSettings(monitoring=_cfg()),
        profile_for=lambda m, v: PROFILE,
        directory=ModelDirectory(reg, clock=_Clock()),
        tenants=["acme", "beta"],
    )


def _rec(model: str, version: int | None = 1, tenant: str = "acme", **kw) -> dict:
    return {
        "request_id": uuid.uuid4().hex,
        "model": model,
        "version": version,
        "tenant": tenant,
        "features": {"tenure": 3.0},
        "probability": 0.4,
        "latency_ms": 3.0,
        "ts": NOW - 10,
        **kw,
    }


def test_only_registered_versions_and_known_tenants_create_state_or_series():
    core = _sealed_core(_Registry({"churn": ModelEntry("acme", 2)}))
    recs = normalize_predictions(
        [_rec("churn"), _rec("churn", 2, tenant="beta", status="error", error_code="x")]
        + [_rec(f"junk-{i}") for i in range(500)]
        + [_rec("churn", 99), _rec("churn", tenant="nobody")]
    )
    kept = core.admit(recs)
    assert [(r["model"], r["version"], r["tenant"]) for r in kept] == [
        ("churn", 1, "acme"),
        ("churn", 2, "beta"),
    ]
    core.ingest_predictions(kept)
    core.evaluate(NOW)
    assert core.state.models() == ["churn"]
    text = core.metrics.exposition().decode()
    assert 'raymlp_unknown_model_records_total{reason="unregistered_model"} 501.0' in text
    assert 'raymlp_unknown_model_records_total{reason="unknown_tenant"} 1.0' in text
    assert "junk-" not in text and 'version="99"' not in text and "nobody" not in text
    # the report's tenant is the registry's, not that of the latest (rejected) record
    assert core.report("churn", NOW - 3600, NOW)["tenant"] == "acme"


def test_caller_chosen_labels_are_bounded():
    budget = LabelBudget(limit=2)
    assert [budget(("code", "m"), c) for c in ("a", "b", "c", "a")] == ["a", "b", OTHER_LABEL, "a"]
    assert budget(("code", "other-model"), "c") == "c"  # the budget is per scope
    core = _sealed_core(_Registry({"churn": ModelEntry("acme", 1)}))
    recs = normalize_predictions(
        [_rec("churn", status="error", error_code=f"code-{i}") for i in range(200)]
    )
    core.ingest_predictions(core.admit(recs))
    text = core.metrics.exposition().decode()
    codes = {
        line.split('code="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("raymlp_prediction_errors_total{")
    }
    assert len(codes) == 33 and OTHER_LABEL in codes  # 32 kept, the rest in one series


def test_a_label_naming_another_model_than_its_request_is_not_joined():
    core = _sealed_core(_Registry({"churn": ModelEntry("acme", 1)}))
    (rec,) = normalize_predictions([_rec("churn", prediction=1, probability=0.9)])
    core.ingest_predictions([rec])
    res = core.ingest_feedback(
        normalize_feedbacks([{"request_id": rec["request_id"], "label": 0, "model": "other"}])
    )
    assert res.mismatched == 1 and res.matched == 0
    res = core.ingest_feedback(
        normalize_feedbacks([{"request_id": rec["request_id"], "label": 1, "model": "churn"}])
    )
    assert res.matched == 1


def test_a_refused_canary_advance_holds_the_run_and_fires_one_alert():
    traffic = {"canary_version": 2, "canary_weight": 5.0}
    core = MonitorCore(
        MonitorSettings(monitoring=_cfg()),
        profile_for=lambda m, v: PROFILE,
        traffic_lookup=lambda m: traffic,
    )
    core.ingest_predictions(_records(300, version=1, seed=31, t0=NOW - 200, span=90))
    core.ingest_predictions(_records(60, version=2, route="canary", seed=32, t0=NOW - 200, span=90))
    out = core.evaluate(NOW - 100)
    (advance,) = [a for a in out["canary"] if a["decision"] == "advance"]
    assert advance["weight"] == 25.0
    run, alert = core.canary_refused(advance, "v2 is not approved (max 10%)", NOW - 100)
    assert run is not None and run["weight"] == 5.0 and run["blocked"]
    assert alert is not None and alert["rule"] == "canary_blocked"
    assert alert["labels"] == {"model": "churn", "version": "2"}
    # healthy again for a whole step: it holds instead of asking the registry again
    core.ingest_predictions(_records(60, version=2, route="canary", seed=33, t0=NOW - 90))
    core.ingest_predictions(_records(200, version=1, seed=34, t0=NOW - 90))
    later = core.evaluate(NOW)["canary"]
    assert [a["decision"] for a in later] == ["hold"]
    assert "advance blocked" in later[0]["reason"]
    assert core.canary_refused(advance, "again", NOW)[1] is None  # one alert, deduplicated
    # once someone moves the weight (e.g. after an approval), it advances on its own again
    traffic["canary_weight"] = 25.0
    core.evaluate(NOW + 1)
    assert core.canary.runs["churn"].blocked is None
    assert core.canary.runs["churn"].weight == 25.0


@pytest.mark.parametrize("limit", [1, 5])
def test_label_budget_never_exceeds_its_limit(limit):
    budget = LabelBudget(limit=limit)
    out = {budget("s", f"v{i}") for i in range(100)}
    assert len(out) == limit + 1


def _blocked_count(core: MonitorCore) -> float:
    for fam in core.metrics.canary_decisions.collect():
        for s in fam.samples:
            if s.name.endswith("_total") and s.labels["decision"] == "blocked":
                return s.value
    return 0.0


def test_a_canary_refusal_that_is_undone_is_not_counted():
    import threading
    from types import SimpleNamespace

    from actors.monitor import MonitorActor

    traffic = {"canary_version": 2, "canary_weight": 5.0}
    core = MonitorCore(
        MonitorSettings(monitoring=_cfg()),
        profile_for=lambda m, v: PROFILE,
        traffic_lookup=lambda m: traffic,
    )
    core.ingest_predictions(_records(300, version=1, seed=31, t0=NOW - 200, span=90))
    core.ingest_predictions(_records(60, version=2, route="canary", seed=32, t0=NOW - 200, span=90))
    (advance,) = [a for a in core.evaluate(NOW - 100)["canary"] if a["decision"] == "advance"]
    appended: list[str] = []
    notified: list[str] = []
    rules = sorted(a["rule"] for a in core.alerts())

    def unwritable(events):
        raise OSError("events table unwritable")

    monitor = SimpleNamespace(  # what MonitorActor._refused reads (no Ray, no storage)
        core=core,
        _lock=threading.RLock(),
        events=SimpleNamespace(append=unwritable),
        _controller_pending={"churn": advance},
        notifier=SimpleNamespace(notify=lambda t: notified.append(t["rule"])),
    )
    refusal = PermissionError("v2 is not approved (max 10%)")
    MonitorActor._refused(monitor, "churn", advance, refusal)  # type: ignore[arg-type]
    # not durable, so undone: not blocked, no alert, not counted, still pending
    assert core.canary.runs["churn"].blocked is None
    assert sorted(a["rule"] for a in core.alerts()) == rules  # no canary_blocked
    assert _blocked_count(core) == 0.0 and monitor._controller_pending == {"churn": advance}
    assert notified == []

    monitor.events = SimpleNamespace(append=lambda evs: appended.extend(k for k, _, _ in evs))
    MonitorActor._refused(monitor, "churn", advance, refusal)  # type: ignore[arg-type]
    assert appended == ["canary", "alert"] and notified == ["canary_blocked"]
    assert core.canary.runs["churn"].blocked and _blocked_count(core) == 1.0
    assert "canary_blocked" in [a["rule"] for a in core.alerts("firing")]
    assert monitor._controller_pending == {}
