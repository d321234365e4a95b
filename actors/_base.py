"""What every platform actor has: its config, its storage root, and liveness/introspection RPCs."""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from raymlp.config import PlatformConfig
from raymlp.storage import Storage


class PlatformActor:
    """Base class of platform actors.

    Ray re-runs ``__init__`` with the same arguments after a crash (``max_restarts=-1``), so a
    subclass rebuilds its in-memory state from ``self.storage`` there.

    Args:
        platform_config: ``PlatformConfig.model_dump(mode="json")`` (plain data pickles safely).
        instance_name: the Ray actor name of this instance (shards share a class).
    """

    def __init__(self, platform_config: dict[str, Any], instance_name: str | None = None) -> None:
        self.config = PlatformConfig.model_validate(platform_config)
        self.storage = Storage(self.config.storage.root, self.config.storage.options)
        self.instance_name = instance_name or type(self).__name__
        self.started_at = time.time()

    def ping(self) -> str:
        return "pong"

    def platform_config(self) -> dict[str, Any]:
        """The config this actor was started with (by `raymlp up`; API keys only as hashes):
        what Serve replicas trust, rather than the cluster KV any driver can rewrite."""
        return self.config.model_dump(mode="json")

    def info(self) -> dict[str, Any]:
        """Where this actor runs, for ``raymlp status``."""
        ctx = ray.get_runtime_context()
        return {
            "name": self.instance_name,
            "node_id": ctx.get_node_id(),
            "pid": os.getpid(),
            "reconstructed": ctx.was_current_actor_reconstructed,
            "started_at": self.started_at,
            "storage_root": self.storage.root,
        }
