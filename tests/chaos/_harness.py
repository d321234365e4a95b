"""The chaos suite's checks: run one fault under load with background writers, then measure
everything the contract of issue 14 names, print the figures, and assert. The load, writers
and killers live in :mod:`bench._chaos` (shared with ``bench/chaos.py``)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench._chaos import (
    CANARY_WEIGHT,
    MODEL,
    ChaosApp,
    Fault,
    Load,
    Victim,
    Writers,
    find,
    prediction_log,
    remember_replicas,
    run_fault,
)
from raymlp.serving.app import GATEWAY, MODEL_SERVER
from tests._wait import wait_for

CLIENTS = 4
#: the platform answers from the primary again within this many seconds of a kill
RECOVERY_BOUND_S = 30.0
#: answers from churn after recovery needed to measure the canary's share
SHARE_SAMPLE = 100


def healthy(app: ChaosApp) -> None:
    """Before a fault: every replica up, the canary in force, the primary answering."""
    import httpx

    from bench._chaos import body_for, send

    wait_for(lambda: len(find(deployment=MODEL_SERVER)) == 2, timeout=90, interval=0.3,
             message="2 ModelServer replicas")
    wait_for(lambda: len(find(deployment=GATEWAY)) == 2, timeout=90, interval=0.3,
             message="2 Gateway replicas")
    remember_replicas(MODEL_SERVER)
    remember_replicas(GATEWAY)
    t = app.traffic()
    assert (t["canary_version"], t["canary_weight"]) == (2, CANARY_WEIGHT), t
    with httpx.Client(base_url=app.url, timeout=30) as c:
        n = iter(range(10**9))
        wait_for(lambda: send(c, body_for(1 + 5 * next(n))).route == "primary", timeout=60,
                 interval=0.2, message="a primary answer")


def run(
    app: ChaosApp, name: str, kill: Callable[[], tuple[float, Victim | None]]
) -> tuple[Fault, dict[str, Any]]:
    """``kill`` under a load of :data:`CLIENTS` clients and the background writers; returns
    the fault and the figures (also printed)."""
    healthy(app)
    seq0 = max((e["seq"] for e in app.p.registry.events()), default=0)
    writers = Writers(app.p, tag=f"{name}-{id(app) % 10_000}").start()
    load = Load(app.url, clients=CLIENTS).start()
    try:
        fault = run_fault(name, load, kill, recover_timeout=RECOVERY_BOUND_S + 30)
        # enough churn answers after recovery to measure the canary's share
        start = fault.t_kill + (fault.recovery_s or 0.0)
        wait_for(
            lambda: len([s for s in load.snapshot() if s.t_sent >= start and s.status == 200
                         and s.model == MODEL]) >= SHARE_SAMPLE,
            timeout=60, interval=0.2, message=f"{SHARE_SAMPLE} churn answers after recovery",
        )
    finally:
        writers.stop()
        samples = load.stop()
    fault.samples = samples
    figures = fault.summary()
    after = [s for s in samples if s.t_sent >= start and s.status == 200 and s.model == MODEL]
    figures["canary_share_after"] = sum(s.route == "canary" for s in after) / len(after)
    figures["acked_events"], figures["acked_rows"] = len(writers.events), len(writers.rows)
    figures["write_failures"] = writers.failures[:5]
    figures["five_xx_sample"] = [(s.status, s.code) for s in fault.five_xx()[:5]]
    figures["lost"] = writers.lost()
    figures["traffic_after"] = app.traffic()
    figures["traffic_events"] = [
        (e.get("kind"), e.get("payload"))
        for e in app.p.registry.events(after_seq=seq0)
        if e.get("kind") != "monitor_alert"
    ]
    figures["prediction_log"] = _log_check(app, samples)
    line = f"CHAOS {name}: " + json.dumps(figures, default=str)
    print(line)
    if os.environ.get("RAYMLP_CHAOS_FIGURES"):  # a file of figures, one line per fault
        with open(os.environ["RAYMLP_CHAOS_FIGURES"], "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return fault, figures


def _log_check(app: ChaosApp, samples: list[Any]) -> dict[str, Any]:
    """Wait until every answered request is in the prediction log; count rows and duplicates."""
    answered = {s.request_id for s in samples if s.status == 200}
    ids: Counter[str] = Counter()

    def all_logged() -> bool:
        ids.clear()
        ids.update(rid for rid, _ in prediction_log(app) if rid in answered)
        return set(ids) == answered

    try:
        wait_for(all_logged, timeout=30, interval=0.5, message="every answer in the log")
    except AssertionError:
        pass  # reported (and asserted) below
    return {
        "answered": len(answered),
        "logged": len(ids),
        "missing": len(answered - set(ids)),
        "duplicates": sum(1 for c in ids.values() if c > 1),
    }


def assert_contract(
    fault: Fault,
    figures: dict[str, Any],
    *,
    allowed_5xx: list[Any] | None = None,
) -> None:
    """The contract every fault test asserts (issue 14 item 8). ``allowed_5xx``: answers
    the caller has already accounted for (Serve's proxy 500s, bounded and reported in the
    gateway test)."""
    allowed = {id(s) for s in allowed_5xx or []}
    non_schema = [s for s in fault.non_schema() if id(s) not in allowed]
    assert not non_schema, f"{len(non_schema)} errors outside our schema: {figures}"
    # every request of the load is valid: any other error is a fault leaking to the caller
    # (issue 14 item 3: degrade to the fallback, a rule or the default answer instead)
    refused = [s for s in fault.samples if 200 < s.status < 500]
    assert not refused, f"{len(refused)} 4xx answers to valid requests: {figures}"
    five_xx = [s for s in fault.five_xx() if id(s) not in allowed]
    assert not five_xx, f"{len(five_xx)} 5xx: {figures}"
    assert figures["lost"] == {"events": [], "rows": []}, figures
    assert figures["acked_events"] > 0 and figures["acked_rows"] > 0, figures
    log = figures["prediction_log"]
    assert log["missing"] == 0 and log["duplicates"] == 0, figures
    t = figures["traffic_after"]
    assert (t["canary_version"], t["canary_weight"]) == (2, CANARY_WEIGHT), figures
    assert figures["traffic_events"] == [], figures  # nobody changed traffic: no rollback
    assert 0.10 <= figures["canary_share_after"] <= 0.45, figures  # still routed
    assert fault.recovery_s is not None and fault.recovery_s <= RECOVERY_BOUND_S, figures
