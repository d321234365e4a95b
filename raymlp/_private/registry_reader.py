"""The registry reads that the SDK's :class:`~raymlp.client.RegistryClient` and the Serve
replicas share: a version, the traffic state, event subscriptions. One implementation, so a
replica resolves a model exactly as a driver does::

    reader = RegistryReader(RegistryRPC(ActorClient("registry", "raymlp"), principal))
    reader.get("customer-churn", alias="production").version
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raymlp._private.model_version import ModelVersion
from raymlp._private.registry_watcher import RegistryWatcher
from raymlp._private.rpc import RegistryRPC

__all__ = ["RegistryReader"]


class RegistryReader:
    """Reads of the registry actor through ``rpc`` (acting as its principal)."""

    def __init__(self, rpc: RegistryRPC) -> None:
        self._rpc = rpc

    def get(self, name: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """A version by number, by alias, or (neither) the latest."""
        return ModelVersion.from_dict(
            self._rpc.query("get_version", name=name, version=version, alias=alias)
        )

    def get_traffic(self, name: str) -> dict[str, Any]:
        """The serving traffic state of ``name``: ``canary_version``, ``canary_weight``,
        ``shadow_version``, ``standby_version``, ``steps``, ``updated_at/by``, ``reason``."""
        return self._rpc.query("get_traffic", name=name)

    def subscribe(
        self, callback: Callable[[dict[str, Any]], Any], kinds: list[str] | None = None
    ) -> RegistryWatcher:
        """Call ``callback(event)`` in a background thread for every new event (of ``kinds``);
        after a resync it gets ``{"kind": "resync", "aliases": {...}}``. ``.stop()`` ends it."""
        w = RegistryWatcher(self._rpc, kinds=kinds, listener=callback)
        w.start()
        return w
