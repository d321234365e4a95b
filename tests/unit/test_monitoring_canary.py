"""Canary analysis (hold / advance / rollback / complete) and the step-plan state machine."""

from __future__ import annotations

import numpy as np

from raymlp.config import CanaryPolicy
from raymlp.monitoring.canary import CanaryStats, CanaryTracker, analyze

POLICY = CanaryPolicy(
    steps=[5, 25, 50, 100],
    min_requests=100,
    min_stable_requests=20,
    min_step_duration="60s",
    max_error_rate_delta=0.02,
    max_p99_ratio=1.5,
    max_drift_psi=0.25,
)


def stats(n=400, errors=0, p99=0.010, hist=None):
    return CanaryStats(requests=n, errors=errors, p99_s=p99, prob_hist=hist)


def test_waits_for_enough_requests():
    v = analyze(POLICY, stats(n=50, errors=50), stats(), 600, False)
    assert v.decision == "hold" and "waiting for data" in v.reasons[0]


def test_error_rate_regression_rolls_back_only_when_significant():
    v = analyze(POLICY, stats(errors=40), stats(n=4000, errors=4), 600, False)
    assert v.decision == "rollback" and v.regression and "error rate" in v.reasons[0]
    # +3 percentage points on a handful of requests each is not significant
    noisy = CanaryPolicy(**{**POLICY.model_dump(), "min_requests": 10, "min_stable_requests": 10})
    assert (
        analyze(noisy, stats(n=30, errors=1), stats(n=30, errors=0), 600, False).decision
        == "advance"
    )


def test_latency_regression_rolls_back_but_submillisecond_noise_does_not():
    assert analyze(POLICY, stats(p99=0.050), stats(p99=0.010), 600, False).decision == "rollback"
    assert analyze(POLICY, stats(p99=0.0009), stats(p99=0.0002), 600, False).decision == "advance"


def test_prediction_drift_vs_stable_rolls_back():
    rng = np.random.default_rng(0)
    stable = np.histogram(rng.beta(2, 5, 2000), np.linspace(0, 1, 101))[0]
    canary = np.histogram(rng.beta(5, 2, 400), np.linspace(0, 1, 101))[0]
    v = analyze(POLICY, stats(hist=canary), stats(n=2000, hist=stable), 600, False)
    assert v.decision == "rollback" and "drift" in v.reasons[0]
    same = np.histogram(rng.beta(2, 5, 400), np.linspace(0, 1, 101))[0]
    assert (
        analyze(POLICY, stats(hist=same), stats(n=2000, hist=stable), 600, False).decision
        == "advance"
    )


def test_healthy_canary_holds_until_the_step_lasted_then_advances_or_completes():
    assert analyze(POLICY, stats(), stats(), 30, False).decision == "hold"
    assert analyze(POLICY, stats(), stats(), 60, False).decision == "advance"
    assert analyze(POLICY, stats(), stats(), 60, True).decision == "complete"


def test_tracker_walks_the_step_plan_and_rolls_back():
    tr = CanaryTracker(POLICY)
    run = tr.start("m", version=2, stable_version=1, now=0)
    assert run.weight == 5
    healthy = lambda run, start, end: (stats(), stats())  # noqa: E731
    weights = []
    t = 0
    for _ in range(5):
        t += 61
        for a in tr.evaluate(t, healthy):
            weights.append((a["decision"], a["weight"]))
    assert weights == [("advance", 25), ("advance", 50), ("advance", 100), ("complete", 100)]
    assert tr.runs["m"].status == "completed"

    tr.start("m", version=3, stable_version=2, now=t)
    bad = lambda run, start, end: (stats(errors=200), stats())  # noqa: E731
    (a,) = tr.evaluate(t + 1, bad)
    assert (a["decision"], a["weight"], a["previous_weight"]) == ("rollback", 0.0, 5.0)
    assert tr.runs["m"].status == "rolled_back"
    assert tr.evaluate(t + 2, bad) == []  # decided: no more actions


def test_tracker_starts_at_the_current_weight_and_respects_auto_flags():
    tr = CanaryTracker(POLICY)
    assert tr.start("m", 2, 1, 0, weight=30).step == 1  # 25 is the largest step <= 30
    manual = CanaryTracker(
        CanaryPolicy(**{**POLICY.model_dump(), "auto_rollback": False, "auto_advance": False})
    )
    manual.start("m", 2, 1, 0)
    (a,) = manual.evaluate(100, lambda r, s, e: (stats(errors=200), stats()))
    assert a["decision"] == "hold" and a["regression"] and a["weight"] == 5


def test_tracker_state_restores():
    tr = CanaryTracker(POLICY)
    tr.start("m", 2, 1, 0)
    tr.evaluate(61, lambda r, s, e: (stats(), stats()))
    again = CanaryTracker(POLICY)
    again.restore(tr.status())
    assert again.runs["m"].weight == 25 and again.runs["m"].step == 1
    assert again.start("m", 2, 1, 100) is None  # same version: not restarted
