"""Circuit breaker: closed → open (rate or streak) → half-open after cool-down → closed/open."""

from __future__ import annotations

from raymlp.config import ServeBreakerSettings
from raymlp.serving.breaker import CLOSED, HALF_OPEN, OPEN, BreakerBoard, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(**kw):
    clock = Clock()
    return CircuitBreaker(ServeBreakerSettings(**kw), clock=clock), clock


def test_opens_on_consecutive_failures_and_skips_calls():
    b, _ = make(consecutive_failures=3, min_calls=100)
    for _ in range(2):
        assert b.allow()
        b.record(False)
    assert b.state == CLOSED
    b.record(False)
    assert b.state == OPEN
    assert not b.allow()
    assert b.snapshot()["opened"] == 1


def test_opens_on_failure_rate_only_after_min_calls():
    b, _ = make(min_calls=10, failure_rate=0.5, consecutive_failures=100)
    for i in range(9):  # 5 failures of 9 calls: rate met, too few calls
        b.record(i % 2 == 1)
    assert b.state == CLOSED
    b.record(False)  # 10 calls, 6 failures
    assert b.state == OPEN


def test_window_forgets_old_failures():
    b, clock = make(window_s=10, min_calls=4, failure_rate=0.5, consecutive_failures=100)
    b.record(False)
    b.record(False)
    b.record(True)
    clock.t += 11  # the failures leave the window
    b.record(True)
    b.record(False)
    b.record(True)
    b.record(True)
    assert b.state == CLOSED
    assert b.snapshot()["failures"] == 1


def test_half_open_after_cooldown_then_closes_on_successful_probes():
    b, clock = make(consecutive_failures=1, cooldown_s=5, half_open_calls=2)
    b.record(False)
    assert not b.allow()
    clock.t += 4.9
    assert b.state == OPEN
    clock.t += 0.2
    assert b.state == HALF_OPEN
    assert b.allow() and b.allow()
    assert not b.allow()  # only half_open_calls probes at a time
    b.record(True)
    assert b.state == HALF_OPEN
    b.record(True)
    assert b.state == CLOSED
    assert b.allow()


def test_failed_probe_reopens_for_another_cooldown():
    b, clock = make(consecutive_failures=1, cooldown_s=5, half_open_calls=1)
    b.record(False)
    clock.t += 5
    assert b.allow()
    b.record(False)
    assert b.state == OPEN and b.snapshot()["opened"] == 2
    clock.t += 4
    assert not b.allow()
    clock.t += 1
    assert b.allow()


def test_lost_probes_are_retried_after_a_cooldown():
    b, clock = make(consecutive_failures=1, cooldown_s=2, half_open_calls=1)
    b.record(False)
    clock.t += 2
    assert b.allow()  # probe outcome never recorded (cancelled)
    assert not b.allow()
    clock.t += 2
    assert b.allow()


def test_disabled_breaker_always_allows():
    b, _ = make(enabled=False, consecutive_failures=1)
    for _ in range(5):
        b.record(False)
    assert b.allow() and b.state == CLOSED


def test_board_keeps_one_breaker_per_version():
    board = BreakerBoard(ServeBreakerSettings(consecutive_failures=1))
    board.get("m:1").record(False)
    assert board.get("m:1").state == OPEN
    assert board.get("m:2").state == CLOSED
    assert set(board.snapshot("m:")) == {"m:1", "m:2"}
