"""The alert rule engine: firing / resolved transitions, pending, dedup, no-data, restore."""

from __future__ import annotations

import pytest

from raymlp.config import AlertRule, MonitoringConfig, load_config
from raymlp.errors import ConfigError, NotFoundError
from raymlp.monitoring.alerts import AlertEngine, fingerprint
from raymlp.monitoring.signals import Sample


def rule(**kw) -> AlertRule:
    base = {
        "name": "high-errors",
        "metric": "error_rate",
        "condition": ">",
        "threshold": 0.1,
        "window": "5m",
        "severity": "critical",
    }
    base.update(kw)
    return AlertRule.model_validate(base)


def feed(values: dict[str, float], count: int = 100):
    def series(r):
        return [Sample(r.metric, {"model": m}, v, count) for m, v in values.items()]

    return series


def test_fires_once_then_resolves_once():
    eng = AlertEngine([rule()])
    t1 = eng.evaluate(0, feed({"a": 0.5, "b": 0.01}))
    assert [(t["transition"], t["labels"]["model"]) for t in t1] == [("firing", "a")]
    assert eng.evaluate(10, feed({"a": 0.6})) == []  # deduplicated: still firing, no news
    firing = eng.alerts("firing")
    assert len(firing) == 1 and firing[0]["value"] == 0.6 and firing[0]["fired_at"] == 0
    t2 = eng.evaluate(20, feed({"a": 0.01}))
    assert [t["transition"] for t in t2] == ["resolved"]
    assert t2[0]["resolve_reason"] == "condition cleared"
    assert eng.alerts("firing") == [] and len(eng.alerts("resolved")) == 1


def test_for_keeps_the_alert_pending_until_it_held_long_enough():
    eng = AlertEngine([rule(**{"for": "2m"})])
    assert eng.evaluate(0, feed({"a": 0.5})) == []
    assert eng.alerts("pending")[0]["state"] == "pending"
    assert eng.evaluate(60, feed({"a": 0.5})) == []
    assert [t["transition"] for t in eng.evaluate(120, feed({"a": 0.5}))] == ["firing"]
    # a pending alert that clears never notifies
    eng2 = AlertEngine([rule(**{"for": "2m"})])
    eng2.evaluate(0, feed({"a": 0.5}))
    assert eng2.evaluate(30, feed({"a": 0.0})) == [] and eng2.alerts() == []


def test_thin_series_are_ignored_and_no_data_resolves_after_a_window():
    eng = AlertEngine([rule(min_count=50)])
    assert eng.evaluate(0, feed({"a": 0.9}, count=10)) == []
    eng.evaluate(0, feed({"a": 0.9}))
    assert len(eng.alerts("firing")) == 1
    assert eng.evaluate(100, feed({})) == []  # traffic stopped: keep firing for now
    out = eng.evaluate(301, feed({}))
    assert [(t["transition"], t["resolve_reason"]) for t in out] == [("resolved", "no data")]


def test_match_selects_series_and_labels_are_attached():
    eng = AlertEngine([rule(match={"model": "b"}, labels={"team": "ml"})])
    out = eng.evaluate(0, feed({"a": 0.9, "b": 0.9}))
    assert len(out) == 1 and out[0]["labels"] == {"model": "b", "team": "ml"}


def test_repeat_interval_renotifies():
    eng = AlertEngine([rule()], repeat_interval_s=60)
    eng.evaluate(0, feed({"a": 0.9}))
    assert eng.evaluate(30, feed({"a": 0.9})) == []
    assert [t["transition"] for t in eng.evaluate(61, feed({"a": 0.9}))] == ["repeat"]


def test_restore_from_transitions_keeps_firing_alerts_without_renotifying():
    eng = AlertEngine([rule()])
    log = eng.evaluate(0, feed({"a": 0.9, "b": 0.9}))
    log += eng.evaluate(10, feed({"a": 0.9, "b": 0.0}))
    restored = AlertEngine([rule()])
    restored.restore(log)
    assert [a["labels"]["model"] for a in restored.alerts("firing")] == ["a"]
    assert [a["labels"]["model"] for a in restored.alerts("resolved")] == ["b"]
    assert restored.evaluate(20, feed({"a": 0.9})) == []
    assert restored.alerts("firing")[0]["fired_at"] == 0


def test_event_alerts_dedup_and_resolve_by_id():
    eng = AlertEngine([])
    t = eng.fire("canary_rollback", "critical", {"model": "m", "version": "2"}, "bad", 5.0)
    assert t["transition"] == "firing" and t["id"] == fingerprint(
        "canary_rollback", {"model": "m", "version": "2"}
    )
    assert eng.fire("canary_rollback", "critical", {"model": "m", "version": "2"}, "x", 6) is None
    assert eng.evaluate(7, feed({})) == []  # event alerts are not subject to rule evaluation
    r = eng.resolve(t["id"], 8.0)
    assert r["transition"] == "resolved"
    with pytest.raises(NotFoundError):
        eng.resolve(t["id"], 9.0)


def test_changing_rules_resolves_alerts_of_removed_rules():
    eng = AlertEngine([rule()])
    eng.evaluate(0, feed({"a": 0.9}))
    out = eng.set_rules([rule(name="other")], 5)
    assert [t["transition"] for t in out] == ["resolved"]
    assert eng.firing_counts() == {("other", "critical"): 0}


def test_rule_config_validation_names_field_and_rule():
    with pytest.raises(ConfigError) as ei:
        load_config(
            MonitoringConfig, {"rules": [{"name": "x", "metric": "cpu", "threshold": 1}]}, "m.yaml"
        )
    assert "rules.0.metric" in str(ei.value) and "not a monitor signal" in str(ei.value)
    with pytest.raises(ConfigError, match="used twice"):
        load_config(
            MonitoringConfig,
            {"rules": [rule().model_dump(by_alias=True), rule().model_dump(by_alias=True)]},
            "m.yaml",
        )
    with pytest.raises(ConfigError, match="cannot split"):
        load_config(
            MonitoringConfig,
            {
                "rules": [
                    {"name": "x", "metric": "feature_drift_psi", "threshold": 1, "by": ["route"]}
                ]
            },
            "m.yaml",
        )
    with pytest.raises(ConfigError, match="increasing"):
        load_config(MonitoringConfig, {"canary": {"steps": [50, 25]}}, "m.yaml")
