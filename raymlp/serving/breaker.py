"""Circuit breakers: stop calling a version that keeps failing, probe it, resume when it heals.

One :class:`CircuitBreaker` guards one served version. It is **closed** (calls pass) until, over a
sliding window, the failure share reaches ``failure_rate`` with at least ``min_calls`` calls, or
``consecutive_failures`` calls fail in a row (timeouts count as failures). It is then **open**:
``allow()`` says no and the gateway goes straight to the next step of the fallback chain. After
``cooldown_s`` it is **half-open**: up to ``half_open_calls`` probe calls pass; if they all
succeed it closes, and one failure re-opens it for another cool-down::

    >>> b = CircuitBreaker(ServeBreakerSettings(consecutive_failures=2), clock=lambda: 0.0)
    >>> b.record(False); b.record(False)
    >>> b.state, b.allow()
    ('open', False)

Pure logic with an injectable clock; one event loop uses it, so no locks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from raymlp.config import ServeBreakerSettings

__all__ = ["CLOSED", "OPEN", "HALF_OPEN", "CircuitBreaker", "BreakerBoard"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Closed → open → half-open → closed breaker of one version (see the module docstring)."""

    def __init__(
        self, settings: ServeBreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._state = CLOSED
        self._calls: deque[tuple[float, bool]] = deque()  # (t, ok) in the window
        self._failures = 0  # failures among _calls
        self._streak = 0  # consecutive failures
        self._opened_at = 0.0
        self._probes = 0  # probe calls let through while half-open
        self._probe_ok = 0
        self.opened_count = 0
        self.last_change = clock()

    # -- reads -----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker past its cool-down)."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.settings.cooldown_s:
            self._set(HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether a call may go through now (a half-open breaker counts its probes)."""
        if not self.settings.enabled:
            return True
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN:
            if (
                self._probes >= self.settings.half_open_calls
                and self._clock() - self.last_change >= self.settings.cooldown_s
            ):
                self._set(HALF_OPEN)  # probes whose outcome never came back: probe again
            if self._probes < self.settings.half_open_calls:
                self._probes += 1
                return True
        return False

    def snapshot(self) -> dict[str, Any]:
        self._trim(self._clock())
        n = len(self._calls)
        return {
            "state": self.state,
            "calls": n,
            "failures": self._failures,
            "failure_rate": (self._failures / n) if n else 0.0,
            "consecutive_failures": self._streak,
            "opened": self.opened_count,
        }

    # -- writes ----------------------------------------------------------------------------

    def record(self, ok: bool) -> None:
        """The outcome of a call that :meth:`allow` let through."""
        if not self.settings.enabled:
            return
        now = self._clock()
        state = self.state
        if state == HALF_OPEN:
            if not ok:
                self._open(now)
                return
            self._probe_ok += 1
            if self._probe_ok >= self.settings.half_open_calls:
                self._close()
            return
        if state == OPEN:
            return  # a late answer of a call made before the breaker opened
        self._calls.append((now, ok))
        if not ok:
            self._failures += 1
            self._streak += 1
        else:
            self._streak = 0
        self._trim(now)
        n = len(self._calls)
        if self._streak >= self.settings.consecutive_failures or (
            n >= self.settings.min_calls and self._failures / n >= self.settings.failure_rate
        ):
            self._open(now)

    # -- internals -------------------------------------------------------------------------

    def _trim(self, now: float) -> None:
        horizon = now - self.settings.window_s
        calls = self._calls
        while calls and calls[0][0] < horizon:
            _, ok = calls.popleft()
            if not ok:
                self._failures -= 1

    def _set(self, state: str) -> None:
        self._state = state
        self.last_change = self._clock()
        self._probes = 0
        self._probe_ok = 0

    def _open(self, now: float) -> None:
        self._opened_at = now
        self.opened_count += 1
        self._set(OPEN)

    def _close(self) -> None:
        self._calls.clear()
        self._failures = 0
        self._streak = 0
        self._set(CLOSED)


class BreakerBoard:
    """The breakers of every version, created on first use, keyed by ``"model:version"``."""

    def __init__(
        self, settings: ServeBreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, key: str) -> CircuitBreaker:
        b = self._breakers.get(key)
        if b is None:
            b = self._breakers[key] = CircuitBreaker(self.settings, self._clock)
        return b

    def snapshot(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        return {k: b.snapshot() for k, b in sorted(self._breakers.items()) if k.startswith(prefix)}
