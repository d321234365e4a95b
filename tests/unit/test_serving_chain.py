"""The fallback chain: primary → fallback model → rule → default, each step with its own
timeout and breaker; client errors end the chain without tripping a breaker."""

from __future__ import annotations

import asyncio

import pytest

from raymlp.config import DefaultResponse, FallbackRule, ServeBreakerSettings
from raymlp.errors import OverloadedError, UnavailableError, ValidationError
from raymlp.serving.breaker import OPEN, BreakerBoard
from raymlp.serving.chain import Step, run_chain

RULES = [FallbackRule(name="young", when={"age": {"lt": 30}}, prediction="yes", probability=0.9)]
DEFAULT = DefaultResponse(prediction="no", probability=0.5)


def ok(p: float, label: str = "yes"):
    async def call():
        return {"prediction": label, "probability": p}

    return call


def boom(exc: Exception):
    async def call():
        raise exc

    return call


def steps(primary, fallback=None, primary_timeout=0.2):
    out = [Step("primary", "m:1", primary, primary_timeout, "1", 1)]
    if fallback is not None:
        out.append(Step("fallback", "fb:1", fallback, 0.2, "fb:1", None))
    return out


def run(s, features=None, rules=RULES, default=DEFAULT, board=None):
    board = board or BreakerBoard(ServeBreakerSettings(consecutive_failures=2, min_calls=100))
    return asyncio.run(run_chain(s, board, rules, features or {}, default)), board


def test_primary_answers():
    ans, _ = run(steps(ok(0.7)))
    assert (ans.route, ans.model_version, ans.probability, ans.version) == ("primary", "1", 0.7, 1)
    assert ans.failures == []


def test_timeout_falls_back_to_the_fallback_model_within_its_budget():
    finished = []

    async def slow_primary():
        await asyncio.sleep(5)
        finished.append(True)
        return {"prediction": "late", "probability": 0.0}

    ans, board = run(steps(slow_primary, ok(0.3), primary_timeout=0.1))
    # the chain answered without waiting for the 5 s primary (its latency: bench/request_path.py)
    assert finished == []
    assert ans.route == "fallback" and ans.model_version == "fb:1"
    assert ans.failures == [("primary", "timeout")]
    assert board.get("m:1").snapshot()["failures"] == 1


def test_errors_fall_through_to_rule_then_default_then_503():
    ans, _ = run(steps(boom(RuntimeError("x")), boom(RuntimeError("y"))), {"age": 20})
    assert (ans.route, ans.model_version, ans.prediction) == ("rule", "rule:young", "yes")
    assert [r for r, _ in ans.failures] == ["primary", "fallback"]
    ans, _ = run(steps(boom(RuntimeError("x"))), {"age": 50})
    assert (ans.route, ans.model_version, ans.prediction) == ("default", "default", "no")
    with pytest.raises(UnavailableError) as e:
        run(steps(boom(RuntimeError("x"))), {"age": 50}, default=None)
    assert e.value.http_status == 503
    assert e.value.context["failures"] == ["primary: unavailable"]


def test_open_breaker_skips_the_step_without_calling_it():
    calls = []

    async def counted():
        calls.append(1)
        raise RuntimeError("down")

    board = BreakerBoard(ServeBreakerSettings(consecutive_failures=2, min_calls=100, cooldown_s=60))
    for _ in range(2):
        run(steps(counted, ok(0.1)), board=board)
    assert board.get("m:1").state == OPEN
    ans, _ = run(steps(counted, ok(0.1)), board=board)
    assert ans.route == "fallback" and ans.failures == [("primary", "breaker_open")]
    assert len(calls) == 2


def test_client_errors_end_the_chain_and_do_not_trip_the_breaker():
    board = BreakerBoard(ServeBreakerSettings(consecutive_failures=1))
    err = ValidationError("feature 'x' must be int64", field="x")
    with pytest.raises(ValidationError):
        run(steps(boom(err), ok(0.1)), board=board)
    assert board.get("m:1").state != OPEN
    with pytest.raises(OverloadedError):
        run(steps(boom(OverloadedError("full")), ok(0.1)), board=board)
    assert board.get("m:1").state != OPEN


def test_a_backup_step_that_cannot_take_the_input_degrades_instead_of_refusing():
    """The primary is down; the fallback model has no feature references for this entity
    request (a 422 of its own): the caller gets the default answer, not a refusal."""
    no_refs = ValidationError("model 'fb' version 1 records no feature references",
                              field="entity", rule="features known")
    board = BreakerBoard(ServeBreakerSettings(consecutive_failures=1))
    ans, _ = run(steps(boom(UnavailableError("feature store down")), boom(no_refs)),
                 features={}, board=board)
    assert ans.route == "default"
    assert ans.failures == [("primary", "unavailable"), ("fallback", "validation_error")]
    assert board.get("fb:1").state != OPEN  # the fallback answered: not sick
    # a rule still gets its turn after a skipped backup step
    ans, _ = run(steps(boom(UnavailableError("down")), boom(no_refs)), features={"age": 20})
    assert (ans.route, ans.prediction) == ("rule", "yes")
    # load shedding by a backup step stays the caller's answer
    with pytest.raises(OverloadedError):
        run(steps(boom(UnavailableError("down")), boom(OverloadedError("full"))))


def test_remote_wrapped_errors_are_unwrapped():
    class Wrapped(Exception):
        def __init__(self, cause):
            super().__init__("ray wrapper")
            self.cause = cause

    with pytest.raises(ValidationError):
        run(steps(boom(Wrapped(ValidationError("bad", field="x")))))
