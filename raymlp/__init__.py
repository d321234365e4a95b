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

from raymlp._version import __version__
from raymlp.client import Platform, connect
from raymlp.config import PlatformConfig, load_platform_config
from raymlp.errors import RayMLPError

__all__ = ["connect", "Platform", "PlatformConfig", "load_platform_config", "RayMLPError",
           "__version__"]
