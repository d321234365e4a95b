"""The hot-path alias cache: a local, event-fed copy of the registry's aliases.

Used by ``p.registry.watcher()`` / ``p.registry.subscribe(...)`` and by the Serve gateway (via
the replica-side services of ``raymlp.serving._platform``); it speaks to the registry actor
through :class:`~raymlp._private.rpc.RegistryRPC`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import TaskCancelledError

from raymlp._private.rpc import RegistryRPC, call
from raymlp.errors import NotFoundError, UnavailableError
from raymlp.registry.events import EventKind

__all__ = ["RegistryWatcher", "ALIAS_KINDS"]

logger = logging.getLogger(__name__)

#: The events that move the alias copy.
ALIAS_KINDS = [EventKind.ALIAS_MOVED, EventKind.ALIAS_DELETED]


class RegistryWatcher:
    """A local, event-fed copy of every alias the principal can see.

    A daemon thread long-polls the registry actor; ``resolve`` is a dict lookup (sub-µs).
    When the actor says the watcher fell behind (``resync``: it missed more events than the
    actor keeps, or the log is behind it) the watcher reloads a snapshot; while the actor is
    unreachable it keeps serving the last copy and retries with backoff.

    Example::

        w = p.registry.watcher()
        w.resolve("churn", "production")   # -> 3
        w.wait_for_seq(seq, timeout_s=1)   # until an event with seq is reflected
    """

    def __init__(
        self,
        client: RegistryRPC,
        *,
        kinds: list[str] | None = None,
        listener: Callable[[dict[str, Any]], Any] | None = None,
        poll_timeout_s: float = 5.0,
    ) -> None:
        # The shared alias cache must not keep its client (and platform) alive: when the user
        # drops them, the thread ends. A subscription is owned by its caller and holds it.
        # ``client`` is the registry protocol object its owner holds (RegistryRPC).
        self._client_ref = weakref.ref(client)
        self._client_hold = client if listener is not None else None
        self._kinds = kinds
        self._listener = listener
        self.poll_timeout_s = poll_timeout_s
        self._aliases: dict[str, dict[str, int]] = {}
        self.seq = 0
        self.resyncs = 0
        self.synced = threading.Event()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_ref: Any = None

    # -- reads -----------------------------------------------------------------------------

    def resolve(self, name: str, alias: str) -> int:
        version = self._aliases.get(name, {}).get(alias)
        if version is None:
            raise NotFoundError(
                f"model {name!r} has no alias {alias!r}", kind="alias", name=alias, model=name
            )
        return version

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._aliases.get(name, {}))

    def wait_for_seq(self, seq: int, timeout_s: float = 5.0) -> bool:
        """Block until events up to ``seq`` are reflected; returns whether they are."""
        with self._cond:
            return self._cond.wait_for(lambda: self.seq >= seq, timeout=timeout_s)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> RegistryWatcher:
        """Start (or restart) the thread; on first start, waits for the first snapshot."""
        if self._thread is not None and self._thread.is_alive():
            if not self._stop.is_set():
                return self
            self._thread.join()  # a stop() still finishing its last poll
        self._stop.clear()
        if not self.synced.is_set():
            self._resync()
        self._thread = threading.Thread(
            target=self._loop, name="raymlp-registry-watcher", daemon=True
        )
        self._thread.start()
        self.synced.wait(timeout_s)
        return self

    def stop(self, wait: bool = False) -> None:
        """Stop polling (the copy stays readable; ``start`` resumes, resyncing if needed).
        The thread ends after its current poll (``wait`` joins it)."""
        self._stop.set()
        ref, self._poll_ref = self._poll_ref, None
        if ref is not None:
            with contextlib.suppress(Exception):
                ray.cancel(ref)  # end the long poll now rather than at its timeout
        if wait and self._thread is not None:
            self._thread.join()

    # -- internals -------------------------------------------------------------------------

    def _resync(self) -> None:
        client = self._client_ref()
        if client is None:
            raise UnavailableError("the registry client of this watcher is gone")
        snap = client.query("alias_snapshot")
        with self._cond:
            self._aliases = {n: dict(a) for n, a in snap["aliases"].items()}
            self.seq = int(snap["seq"])
            self._cond.notify_all()
        if self.synced.is_set():
            self.resyncs += 1
        self.synced.set()
        if self._listener is not None and self.resyncs:
            self._notify({"kind": "resync", "seq": self.seq, "aliases": snap["aliases"]})

    def _notify(self, event: dict[str, Any]) -> None:
        try:
            self._listener(event)  # type: ignore[misc]
        except Exception:  # a subscriber's bug must not kill the watcher
            logger.exception("registry subscriber callback failed")

    def _apply(self, ev: dict[str, Any]) -> None:
        p = ev.get("payload") or {}
        if ev["kind"] == EventKind.ALIAS_MOVED:
            current = dict(self._aliases.get(p["name"], {}))
            current[p["alias"]] = int(p["after"])
            self._aliases[p["name"]] = current  # swap whole dicts: readers never see a half
        elif ev["kind"] == EventKind.ALIAS_DELETED:
            current = dict(self._aliases.get(p["name"], {}))
            current.pop(p["alias"], None)
            self._aliases[p["name"]] = current

    def _loop(self) -> None:
        backoff = 0.05
        kinds = self._kinds if self._listener is not None else ALIAS_KINDS
        if self._listener is not None and self._kinds is not None:
            kinds = sorted(set(self._kinds) | set(ALIAS_KINDS))
        while not self._stop.is_set():
            if not ray.is_initialized():
                # The driver shut Ray down: stop. A call now would auto-init Ray from this
                # thread and join a cluster being torn down, whose death then kills the driver.
                logger.debug("registry watcher: Ray is not initialised; stopping")
                return
            client = self._client_ref()
            if client is None:
                return  # nobody can read this copy any more
            try:
                ref = client.actor.remote(
                    "wait_for_events",
                    client.principal,
                    self.seq,
                    self.poll_timeout_s,
                    kinds,
                    1000,
                )
                self._poll_ref = ref
                if self._stop.is_set():
                    break
                res = call(ref, timeout=self.poll_timeout_s + 30, actor="registry")
                if res["resync"]:
                    self._resync()
                    continue
                for ev in res["events"]:
                    self._apply(ev)
                    if self._listener is not None and (
                        self._kinds is None or ev["kind"] in self._kinds
                    ):
                        self._notify(ev)
                with self._cond:
                    self.seq = max(self.seq, int(res["last_seq"]))
                    self._cond.notify_all()
                backoff = 0.05
            except TaskCancelledError:
                continue  # stop() cancelled the poll
            except (UnavailableError, NotFoundError) as e:
                # Restart or partition: keep serving the last copy, retry.
                logger.debug("registry watcher: %s; retrying in %.2fs", e, backoff)
                client.actor._handle = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                logger.exception("registry watcher poll failed")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                client = None  # hold the client only while polling (see _client_ref)
