"""The one way tests wait for state they cannot be told about: poll a condition until a deadline.

Tests never sleep and then assert; they poll with :func:`wait_for`, which returns as soon as the
condition holds and, on timeout, fails with the caller's message and what it last saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_for"]

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """A condition did not hold before its deadline (a test failure, and a timeout)."""


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy; return it.

    A call that raises counts as "not yet" (e.g. an actor still restarting); the last error is
    kept for the failure message. The condition is evaluated once more after the deadline has
    passed, so a slow final poll is not lost.

    Raises:
        WaitTimeout: ``message``, the timeout and the last value or error seen; chained
            (``from``) to that last error.
    """
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, got {timeout!r}")
    if interval <= 0:
        raise ValueError(f"interval must be > 0, got {interval!r}")
    deadline = time.monotonic() + timeout
    last_value: object = None
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
        except Exception as e:  # noqa: BLE001 - "not yet"; reported if it never holds
            last_error = e
        else:
            if value:
                return value
            last_value, last_error = value, None
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    seen = (
        f"last error: {last_error!r}" if last_error is not None else f"last value: {last_value!r}"
    )
    raise WaitTimeout(f"timed out after {timeout}s waiting for {message} ({seen})") from last_error
