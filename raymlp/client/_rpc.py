"""Calling platform actors: named-handle lookup, timeouts, and error unwrapping.

Every actor call from the SDK, CLI, jobs and Serve replicas goes through :func:`call`, so a
failing actor method raises the original raymlp error (type and context intact) and a dead or
unreachable actor raises :class:`~raymlp.errors.UnavailableError` naming it.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    GetTimeoutError,
    RayTaskError,
)

from raymlp import _constants
from raymlp.errors import NotFoundError, RayMLPError, UnavailableError, unwrap_ray_error


def call(ref: Any, *, timeout: float | None = None, actor: str = "actor") -> Any:
    """``ray.get`` one (or a list of) ObjectRef(s) from an actor method, with raymlp errors."""
    try:
        return ray.get(ref, timeout=timeout if timeout is not None else _constants.actor_call_timeout_s())
    except RayTaskError as e:
        cause = unwrap_ray_error(e)
        if isinstance(cause, RayMLPError):
            raise cause from None
        raise
    except (ActorDiedError, ActorUnavailableError) as e:
        raise UnavailableError(f"platform actor {actor!r} is unavailable: {type(e).__name__}",
                               actor=actor) from e
    except GetTimeoutError as e:
        raise UnavailableError(f"platform actor {actor!r} did not answer in time", actor=actor) from e


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
