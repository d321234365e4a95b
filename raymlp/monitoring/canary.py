"""Canary analysis and the step-plan state machine (auto-advance, auto-rollback).

While a model has a canary, the monitor compares the canary version (route ``canary``) with
the stable version (route ``primary``) over the traffic of the current step:

* **error rate**: canary minus stable above ``max_error_rate_delta`` *and* significant
  (one-sided two-proportion z-test at ``significance``) → roll back;
* **latency p99**: canary / stable above ``max_p99_ratio`` (stable p99 floored at 1 ms, so
  sub-millisecond noise never decides) → roll back;
* **drift**: PSI between the canary's and the stable version's predicted-probability
  distributions above ``max_drift_psi`` → roll back;
* otherwise, once the step has ``min_requests`` canary requests and lasted
  ``min_step_duration``: **advance** to the next step of ``steps`` (5 → 25 → 50 → 100), and at
  the last step **complete**. Until then: **hold**.

:func:`analyze` is the pure verdict; :class:`CanaryTracker` keeps one :class:`CanaryRun` per
model, turns verdicts into actions (new weight) and is rebuilt from its persisted runs::

    tracker = CanaryTracker(policy)
    tracker.start("churn", version=4, stable_version=3, now=t)
    for action in tracker.evaluate(now, stats_for):
        controller(action["model"], canary_version=action["version"],
                   canary_weight=action["weight"], reason=action["reason"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from raymlp.config import CanaryPolicy
from raymlp.monitoring.stats import psi, two_proportion_test

__all__ = ["CanaryStats", "Verdict", "CanaryRun", "CanaryTracker", "analyze", "P99_FLOOR_S"]

#: Stable p99 below this is treated as this (latency ratios of sub-ms numbers are noise).
P99_FLOOR_S = 0.001
_HISTORY = 50


@dataclass
class CanaryStats:
    """One side of the comparison over the step's window."""

    requests: int = 0
    errors: int = 0
    p99_s: float | None = None
    prob_hist: np.ndarray | None = None  # predicted-probability histogram

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class Verdict:
    decision: str  # hold | advance | rollback | complete
    reasons: list[str]
    metrics: dict[str, Any]
    regression: bool = False


def _coarse(h: np.ndarray, bins: int = 10) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64)
    if h.size % bins:
        return h
    return h.reshape(bins, -1).sum(axis=1)


def _homogeneity_p(a: np.ndarray, b: np.ndarray) -> float:
    """p-value of the chi-square test that two histograms come from one distribution."""
    keep = (a + b) > 0
    if keep.sum() < 2:
        return 1.0
    from scipy import stats as sps  # imported on use (~1 s per worker process)

    return float(sps.chi2_contingency(np.vstack([a[keep], b[keep]]), correction=False)[1])


def analyze(
    policy: CanaryPolicy,
    canary: CanaryStats,
    stable: CanaryStats,
    step_elapsed_s: float,
    last_step: bool,
) -> Verdict:
    """The verdict on one step of a canary (see the module docstring for the rules)."""
    m: dict[str, Any] = {
        "canary_requests": canary.requests,
        "stable_requests": stable.requests,
        "canary_error_rate": canary.error_rate if canary.requests else None,
        "stable_error_rate": stable.error_rate if stable.requests else None,
        "canary_p99_s": canary.p99_s,
        "stable_p99_s": stable.p99_s,
        "error_rate_delta": None,
        "error_p_value": None,
        "p99_ratio": None,
        "drift_psi": None,
        "drift_p_value": None,
        "step_elapsed_s": step_elapsed_s,
    }
    if canary.requests < policy.min_requests or stable.requests < policy.min_stable_requests:
        return Verdict(
            "hold",
            [
                f"waiting for data: {canary.requests}/{policy.min_requests} canary and "
                f"{stable.requests}/{policy.min_stable_requests} stable requests"
            ],
            m,
        )
    reasons: list[str] = []
    delta = canary.error_rate - stable.error_rate
    _, p = two_proportion_test(canary.errors, canary.requests, stable.errors, stable.requests)
    m.update(error_rate_delta=delta, error_p_value=p)
    if delta > policy.max_error_rate_delta and p < policy.significance:
        reasons.append(
            f"error rate {canary.error_rate:.2%} vs stable {stable.error_rate:.2%} "
            f"(delta {delta:.2%} > {policy.max_error_rate_delta:.2%}, p={p:.2g})"
        )
    if canary.p99_s is not None and stable.p99_s is not None:
        ratio = canary.p99_s / max(stable.p99_s, P99_FLOOR_S)
        m["p99_ratio"] = ratio
        if ratio > policy.max_p99_ratio:
            reasons.append(
                f"p99 latency {canary.p99_s * 1000:.1f} ms vs stable "
                f"{stable.p99_s * 1000:.1f} ms (ratio {ratio:.2f} > "
                f"{policy.max_p99_ratio:g})"
            )
    if (
        canary.prob_hist is not None
        and stable.prob_hist is not None
        and canary.prob_hist.sum() >= policy.min_requests / 2
        and stable.prob_hist.sum() >= policy.min_stable_requests
    ):
        sh, ch = _coarse(stable.prob_hist), _coarse(canary.prob_hist)
        d = float(psi(sh, ch))
        dp = _homogeneity_p(sh, ch)
        m.update(drift_psi=d, drift_p_value=dp)
        # PSI of small samples is inflated by noise: the shift must also be significant
        if d > policy.max_drift_psi and dp < policy.significance:
            reasons.append(
                f"prediction drift vs stable: PSI {d:.3f} > {policy.max_drift_psi:g} (p={dp:.2g})"
            )
    if reasons:
        return Verdict("rollback", reasons, m, regression=True)
    need = policy.min_step_duration.total_seconds()
    if step_elapsed_s < need:
        return Verdict("hold", [f"healthy; step has run {step_elapsed_s:.0f}s of {need:.0f}s"], m)
    if last_step:
        return Verdict("complete", ["healthy at the last step"], m)
    return Verdict("advance", ["healthy for the whole step"], m)


@dataclass
class CanaryRun:
    """One canary of one model, as the monitor drives it."""

    model: str
    version: int
    stable_version: int | None
    step: int
    weight: float
    status: str  # running | rolled_back | completed | superseded
    started_at: float
    step_started_at: float
    updated_at: float
    last_verdict: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)  # empty: the policy's
    #: Why automatic advance is off for this run (the registry refused one), else None. A
    #: blocked run is still analysed and rolled back on a regression; it only holds instead
    #: of advancing, until the weight is changed by someone else (e.g. after an approval).
    blocked: str | None = None

    def plan(self, policy: CanaryPolicy) -> list[float]:
        return self.steps or list(policy.steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CanaryRun:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


StatsFn = Callable[[CanaryRun, float, float], tuple[CanaryStats, CanaryStats]]


class CanaryTracker:
    """One :class:`CanaryRun` per model; :meth:`evaluate` returns the actions to apply."""

    def __init__(self, policy: CanaryPolicy) -> None:
        self.policy = policy
        self.runs: dict[str, CanaryRun] = {}

    def step_for_weight(self, weight: float | None, steps: list[float] | None = None) -> int:
        """The step index whose percentage is the largest not above ``weight``."""
        if weight is None:
            return 0
        idx = [i for i, s in enumerate(steps or self.policy.steps) if s <= weight + 1e-9]
        return idx[-1] if idx else 0

    def start(
        self,
        model: str,
        version: int,
        stable_version: int | None,
        now: float,
        weight: float | None = None,
        steps: list[float] | None = None,
        restart: bool = False,
    ) -> CanaryRun | None:
        """Track a canary (None if this version is already tracked or was decided, unless
        ``restart``). ``weight``: its current traffic share (picks the step); ``steps``: the
        step plan kept with the traffic state (default: the policy's)."""
        run = self.runs.get(model)
        if run is not None and run.version == version and not restart:
            return None
        if run is not None and run.status == "running":
            run.status = "superseded"
        plan = [float(x) for x in steps] if steps else list(self.policy.steps)
        step = self.step_for_weight(weight, plan)
        new = CanaryRun(
            model=model,
            version=int(version),
            stable_version=stable_version,
            step=step,
            weight=float(weight if weight is not None else plan[step]),
            status="running",
            started_at=now,
            step_started_at=now,
            updated_at=now,
            steps=plan,
        )
        self.runs[model] = new
        return new

    def evaluate(self, now: float, stats: StatsFn) -> list[dict[str, Any]]:
        """Analyse every running canary; returns one action per decision (also holds)."""
        actions: list[dict[str, Any]] = []
        if not self.policy.enabled:
            return actions
        for run in list(self.runs.values()):
            if run.status != "running":
                continue
            canary, stable = stats(run, run.step_started_at, now)
            last = run.step >= len(run.plan(self.policy)) - 1
            v = analyze(self.policy, canary, stable, now - run.step_started_at, last)
            actions.append(self._apply(run, v, now))
        return actions

    def _apply(self, run: CanaryRun, v: Verdict, now: float) -> dict[str, Any]:
        previous = run.weight
        decision = v.decision
        if decision == "rollback" and not self.policy.auto_rollback:
            decision = "hold"
            v.reasons.append("auto_rollback is off: an alert was raised instead")
        if decision == "advance" and not self.policy.auto_advance:
            decision = "hold"
            v.reasons.append("auto_advance is off: advance manually")
        if decision == "advance" and run.blocked is not None:
            decision = "hold"
            v.reasons.append(f"advance blocked ({run.blocked}): advance after approval")
        if decision == "rollback":
            run.status = "rolled_back"
            run.weight = 0.0
        elif decision == "advance":
            run.step += 1
            run.weight = float(run.plan(self.policy)[run.step])
            run.step_started_at = now
        elif decision == "complete":
            run.status = "completed"
        run.updated_at = now
        entry = {
            "ts": now,
            "decision": decision,
            "verdict": v.decision,
            "weight": run.weight,
            "previous_weight": previous,
            "reasons": list(v.reasons),
            "metrics": dict(v.metrics),
            "step": run.step,
        }
        run.last_verdict = entry
        if decision != "hold" or not run.history or run.history[-1]["decision"] != "hold":
            run.history.append(entry)
            del run.history[:-_HISTORY]
        return {
            "model": run.model,
            "version": run.version,
            "decision": decision,
            "verdict": v.decision,
            "regression": v.regression,
            "weight": run.weight,
            "previous_weight": previous,
            "reason": "; ".join(v.reasons),
            "metrics": dict(v.metrics),
            "changed": run.weight != previous or decision == "complete",
            "run": run.to_dict(),
        }

    def block(
        self,
        model: str,
        version: int,
        previous_weight: float | None,
        decision: str,
        error: str,
        now: float,
    ) -> CanaryRun | None:
        """A decision on ``model`` v``version`` was refused where it is applied (the registry
        said no): an advance goes back to ``previous_weight`` (the weight still in force) and
        the run is marked ``blocked`` (it holds instead of advancing). None if that run is not
        tracked any more."""
        run = self.runs.get(model)
        if run is None or run.version != int(version):
            return None
        if decision == "advance" and previous_weight is not None:
            run.weight = float(previous_weight)
            run.step = self.step_for_weight(run.weight, run.plan(self.policy))
        run.blocked = f"{decision} refused: {error}"
        run.updated_at = now
        entry = {
            "ts": now,
            "decision": "blocked",
            "verdict": decision,
            "weight": run.weight,
            "previous_weight": previous_weight,
            "reasons": [run.blocked],
            "metrics": {},
            "step": run.step,
        }
        run.last_verdict = entry
        run.history.append(entry)
        del run.history[:-_HISTORY]
        return run

    def unblock(self, model: str, weight: float, now: float) -> CanaryRun | None:
        """Resume automatic advance of a blocked run whose weight someone else changed (the
        registry now shows ``weight``); None when there is nothing to resume."""
        run = self.runs.get(model)
        if run is None or run.blocked is None or run.status != "running":
            return None
        if abs(float(weight) - run.weight) <= 1e-9:
            return None
        run.blocked = None
        run.weight = float(weight)
        run.step = self.step_for_weight(run.weight, run.plan(self.policy))
        run.step_started_at = now
        run.updated_at = now
        return run

    def restore(self, runs: Iterable[Mapping[str, Any]]) -> None:
        """Rebuild from persisted runs (later entries of a model win)."""
        self.runs = {}
        for d in runs:
            r = CanaryRun.from_dict(d)
            self.runs[r.model] = r

    def status(self, model: str | None = None) -> list[dict[str, Any]]:
        return [r.to_dict() for m, r in sorted(self.runs.items()) if model in (None, m)]
