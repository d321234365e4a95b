"""raymlp: the whole ML model lifecycle on one Ray cluster.

Features (Delta offline store + online store), experiment tracking and a model registry,
distributed training (Ray Tune x Ray Train + DeepSpeed), Ray Serve inference with canary/shadow
routing and fallbacks, and live monitoring — as long-lived Ray actors, Ray Data pipelines and a
Serve application.

Example::

    import raymlp
    p = raymlp.connect()
    p.status()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raymlp._version import __version__
from raymlp.errors import RayMLPError

if TYPE_CHECKING:
    from raymlp.client import Platform, connect
    from raymlp.config import PlatformConfig, load_platform_config

__all__ = ["connect", "Platform", "PlatformConfig", "load_platform_config", "RayMLPError",
           "__version__"]

# The SDK is imported on first use: every actor and Serve replica imports ``raymlp.<module>``,
# and importing the whole SDK (monitoring's scipy, Ray Data, pandas) there cost each new worker
# process seconds before it could answer.
_LAZY = {
    "connect": "raymlp.client",
    "Platform": "raymlp.client",
    "PlatformConfig": "raymlp.config",
    "load_platform_config": "raymlp.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raymlp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
