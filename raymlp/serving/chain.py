"""The fallback chain: primary → fallback model → rule → default response.

Each model step has its own timeout and its own circuit breaker: a step whose breaker is open is
skipped at once (no waiting on a sick version), a step that times out or fails counts against
its breaker and hands over to the next. Client errors (a feature of the wrong type, an unknown
entity, load shedding) are the caller's answer, not a sick model: they stop the chain and do not
count against the breaker. Only the first step that could be asked speaks for the caller,
though: once a step has failed (or was skipped: its breaker is open — it has been failing), a
later step that cannot take the request as it is (a fallback
model with another signature, or without the primary's feature references for an entity
request) is skipped as ``(route, code)`` — the chain degrades to the rule or default answer
instead of refusing a request the primary never refused. ``route`` of the answer says who answered::

    steps = [Step("primary", "churn:3", call_primary, 1.0, "3"),
             Step("fallback", "churn-fallback:1", call_fallback, 0.5, "churn-fallback:1")]
    answer = await run_chain(steps, breakers, rules, features, default)
    answer.route        # 'primary', or 'fallback'/'rule'/'default' when it had to fall back
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raymlp.config import DefaultResponse, FallbackRule
from raymlp.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    UnavailableError,
    ValidationError,
)
from raymlp.serving.breaker import BreakerBoard
from raymlp.serving.errors import to_raymlp_error
from raymlp.serving.rules import match_rule

__all__ = ["Step", "Answer", "run_chain", "CLIENT_ERRORS"]

#: Errors that are the caller's answer: they end the chain and never trip a breaker.
#: (From a step after one that failed, the input errors among them only skip that step.)
CLIENT_ERRORS = (
    ValidationError,
    NotFoundError,
    BadRequestError,
    AuthenticationError,
    PermissionDeniedError,
    OverloadedError,
)

#: Client errors that only say "this step cannot take this input" (see the module docstring).
_INPUT_ERRORS = (ValidationError, NotFoundError, BadRequestError)


@dataclass
class Step:
    """One model step of the chain."""

    route: str  # primary | canary | fallback
    key: str  # breaker key: the model id ("name:version")
    call: Callable[[], Awaitable[dict[str, Any]]]
    timeout_s: float
    model_version: str  # what the response reports
    version: int | None = None


@dataclass
class Answer:
    """Who answered and what."""

    route: str
    model_version: str
    prediction: Any
    probability: float | None
    version: int | None = None
    #: the model inputs, when the answering server reports them (entity requests)
    features: dict[str, Any] | None = None
    #: ``[(route, reason)]`` of the steps that could not answer
    failures: list[tuple[str, str]] = field(default_factory=list)


async def run_chain(
    steps: Sequence[Step],
    breakers: BreakerBoard,
    rules: Sequence[FallbackRule],
    features: Mapping[str, Any] | None,
    default: DefaultResponse | None,
) -> Answer:
    """The first answer of ``steps``, then of ``rules`` on ``features``, then ``default``.

    Raises:
        ValidationError, NotFoundError, OverloadedError...: a client error of a model step.
        UnavailableError: nothing could answer (``details.failures`` lists why).
    """
    failures: list[tuple[str, str]] = []
    for step in steps:
        breaker = breakers.get(step.key)
        if not breaker.allow():
            failures.append((step.route, "breaker_open"))
            continue
        try:
            out = await asyncio.wait_for(step.call(), step.timeout_s)
        except TimeoutError:
            breaker.record(False)
            failures.append((step.route, "timeout"))
            continue
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure is classified below
            err = to_raymlp_error(e)
            if isinstance(err, CLIENT_ERRORS):
                if not isinstance(err, OverloadedError):
                    breaker.record(True)  # the server answered: it is healthy
                if failures and isinstance(err, _INPUT_ERRORS):
                    # a backup step that cannot take this request: the primary never
                    # refused it, so degrade further instead of refusing the caller
                    failures.append((step.route, err.code))
                    continue
                raise err from None
            breaker.record(False)
            failures.append((step.route, err.code))
            continue
        breaker.record(True)
        return Answer(
            route=step.route,
            model_version=step.model_version,
            prediction=out.get("prediction"),
            probability=out.get("probability"),
            version=step.version,
            features=out.get("features"),
            failures=failures,
        )
    rule = match_rule(rules, features)
    if rule is not None:
        return Answer(
            route="rule",
            model_version=f"rule:{rule.name}",
            prediction=rule.prediction,
            probability=rule.probability,
            failures=failures,
        )
    if default is not None:
        return Answer(
            route="default",
            model_version="default",
            prediction=default.prediction,
            probability=default.probability,
            failures=failures,
        )
    raise UnavailableError(
        "no model, rule or default response could answer this request",
        failures=[f"{route}: {why}" for route, why in failures] or ["no model is served"],
    )
