"""Calling platform actors: named-handle lookup, timeouts, and error unwrapping.

Every actor call from the SDK, CLI, jobs, Serve replicas and the other actors goes through
:func:`call`, so a failing actor method raises the original raymlp error (type and context
intact) and a dead or unreachable actor raises :class:`~raymlp.errors.UnavailableError` naming
it. :class:`RegistryRPC` is the registry actor's wire protocol (principal, idempotency keys,
retries across restarts), shared by ``p.registry``, the Serve replicas and the monitor actor.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    GetTimeoutError,
    RayTaskError,
)

from raymlp import _constants
from raymlp._private.credentials import Caller
from raymlp.config import PlatformConfig
from raymlp.errors import NotFoundError, RayMLPError, UnavailableError, unwrap_ray_error

__all__ = ["call", "ActorClient", "RegistryRPC", "published_config"]


def published_config() -> PlatformConfig | None:
    """The config the running platform was brought up with (None if not up): how any process
    on the cluster (replicas, actors, the SDK) finds the platform."""
    from ray.experimental import internal_kv

    raw = internal_kv._internal_kv_get(_constants.PLATFORM_KV_KEY, namespace=_constants.NAMESPACE)
    if not raw:
        return None
    return PlatformConfig.model_validate(json.loads(raw))


def call(ref: Any, *, timeout: float | None = None, actor: str = "actor") -> Any:
    """``ray.get`` one (or a list of) ObjectRef(s) from an actor method, with raymlp errors."""
    try:
        return ray.get(
            ref, timeout=timeout if timeout is not None else _constants.actor_call_timeout_s()
        )
    except RayTaskError as e:
        cause = unwrap_ray_error(e)
        if isinstance(cause, RayMLPError):
            raise cause from None
        raise
    except (ActorDiedError, ActorUnavailableError) as e:
        raise UnavailableError(
            f"platform actor {actor!r} is unavailable: {type(e).__name__}", actor=actor
        ) from e
    except GetTimeoutError as e:
        raise UnavailableError(
            f"platform actor {actor!r} did not answer in time", actor=actor
        ) from e


class ActorClient:
    """A lazily resolved handle on one named platform actor.

    Example::

        reg = ActorClient("registry")
        reg.call("ping")            # -> "pong"
    """

    def __init__(self, name: str, namespace: str = _constants.NAMESPACE) -> None:
        self.name = name
        self.namespace = namespace
        self._handle: Any = None

    @property
    def handle(self) -> Any:
        if self._handle is None:
            try:
                self._handle = ray.get_actor(self.name, namespace=self.namespace)
            except ValueError:
                raise NotFoundError(
                    f"platform actor {self.name!r} is not running (run `raymlp up`)",
                    kind="actor",
                    name=self.name,
                ) from None
        return self._handle

    def remote(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Start a call; returns the ObjectRef."""
        return getattr(self.handle, method).remote(*args, **kwargs)

    def call(self, method: str, *args: Any, _timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method`` and wait for its result."""
        return call(self.remote(method, *args, **kwargs), timeout=_timeout, actor=self.name)


class RegistryRPC:
    """The registry actor's protocol, acting as one principal.

    Every call is retried while the actor restarts (up to ``retry_s``); mutations
    (:meth:`command`) carry an idempotency key, so a retried one is applied once.

    Example::

        reg = RegistryRPC(ActorClient("registry"), caller)
        reg.query("get_traffic", name="churn")
        reg.command("record_event", kind="monitor_alert", model="churn", payload={...})
    """

    def __init__(self, actor: ActorClient, caller: Caller, retry_s: float = 60.0) -> None:
        self.actor = actor
        self.caller = caller
        self.retry_s = retry_s

    @property
    def principal(self) -> dict[str, Any]:
        """The caller's credential as the actor takes it (a plain dict, verified there)."""
        return self.caller.wire()

    def call(self, method: str, *args: Any, _timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method``, retrying while the actor restarts."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                return self.actor.call(method, *args, _timeout=_timeout, **kwargs)
            except UnavailableError:
                if time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)  # the actor is restarting: Ray brings it back, then we retry
            delay = min(delay * 2, 1.0)
            self.actor._handle = None  # re-resolve: a removed platform fails fast
            try:
                self.actor.handle  # noqa: B018 - resolves the named actor
            except NotFoundError as e:
                raise UnavailableError(
                    "the registry actor is gone (run `raymlp up`)", actor="registry"
                ) from e

    def command(self, op: str, **kwargs: Any) -> Any:
        """A registry mutation (with a fresh idempotency key)."""
        return self.call("command", self.principal, op, kwargs, uuid.uuid4().hex)

    def query(self, op: str, **kwargs: Any) -> Any:
        """A registry read."""
        return self.call("query", self.principal, op, kwargs)
