"""Deploying the serving application onto Ray Serve, and finding it again.

What ``p.serve.deploy`` / ``raymlp serve deploy`` run: check the service principal up front,
start Serve with the HTTP options, ``serve.run`` the application built by
:func:`raymlp.serving.app.build_app` (which returns once it is RUNNING, every gateway replica
having warmed the stable versions), and record the config and URL in the cluster's KV store so
``status``, ``url`` and traffic commands find the application later::

    url = deploy(platform_config, "configs/serve/churn.yaml")   # http://127.0.0.1:8000
    gateway_handle(platform_config).infer.remote({...})
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from raymlp._private import principals
from raymlp._private.serve_ingress import INGRESS_KV_KEY, running_ingress
from raymlp.config import PlatformConfig, Principal, ServeAppConfig, load_config, load_serve_config
from raymlp.errors import ConfigError, NotFoundError

__all__ = [
    "DEFAULT_APP",
    "load_app_config",
    "check_service_principal",
    "deploy",
    "delete",
    "url_for",
    "deployed",
    "config_of",
    "app_name",
    "gateway_handle",
    "model_server_handle",
]

DEFAULT_APP = "raymlp"
_KV_PREFIX = "raymlp/serve/"


def _kv() -> Any:
    from ray.experimental import internal_kv

    return internal_kv


def _live_app_names() -> set[str]:
    """The Serve applications that exist right now (none when Serve is not running)."""
    import ray

    try:
        ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    except ValueError:
        return set()
    from ray import serve

    return set(serve.status().applications)


def load_app_config(
    config: str | os.PathLike[str] | ServeAppConfig | dict[str, Any],
) -> ServeAppConfig:
    """A :class:`ServeAppConfig` from a path, a dict or itself (errors name the field)."""
    if isinstance(config, ServeAppConfig):
        return config
    if isinstance(config, dict):
        return load_config(ServeAppConfig, config, "<serve config>")
    return load_serve_config(config)


def check_service_principal(platform_config: PlatformConfig, cfg: ServeAppConfig) -> Principal:
    """The principal the replicas will act as; ConfigError (naming ``principal``) when the
    platform cannot provide it — refused here, not in replicas that never start."""
    return principals.check_service_principal(platform_config, cfg.principal)


def cluster_ingress(namespace: str | None = None) -> str:
    """Serve's ingress of the cluster: what raymlp recorded when it started it, else what this
    process's environment says (a cluster started by others may run either)."""
    if namespace is not None:
        try:
            recorded = _kv()._internal_kv_get(INGRESS_KV_KEY, namespace=namespace)
            if recorded:
                return recorded.decode()
        except Exception:  # noqa: BLE001 - no Ray here: the environment decides
            pass
    return running_ingress()


def check_ingress_supports(http: Any, namespace: str | None = None) -> None:
    """ConfigError naming ``http.ssl_keyfile`` when TLS is asked of a cluster that runs
    Serve's HAProxy ingress, which is HTTP only (docs/serving.md: TLS)."""
    if http.ssl_keyfile and cluster_ingress(namespace) == "haproxy":
        raise ConfigError(
            f"http.ssl_keyfile={http.ssl_keyfile!r}: this Ray cluster runs Serve's HAProxy "
            "ingress, which is HTTP only (rule: TLS needs ray.serve_ingress 'proxy', or "
            "terminate TLS in a load balancer in front of HAProxy)",
            field="http.ssl_keyfile",
            rule="TLS needs the proxy ingress",
        )


def deploy(
    platform_config: PlatformConfig,
    config: str | os.PathLike[str] | ServeAppConfig | dict[str, Any],
) -> str:
    """Deploy (or update in place) the application; returns its URL once every gateway
    replica has warmed the stable versions. Idempotent."""
    cfg = load_app_config(config)
    check_service_principal(platform_config, cfg)
    from ray import serve

    from raymlp.serving.app import build_app, http_options

    http = cfg.http or platform_config.http
    check_ingress_supports(http, platform_config.ray.namespace)
    serve.start(http_options=http_options(http))
    serve.run(build_app(cfg, platform_config), name=cfg.name, route_prefix=cfg.route_prefix)
    url = url_for(platform_config, cfg)
    _kv()._internal_kv_put(
        f"{_KV_PREFIX}{cfg.name}".encode(),
        json.dumps(
            {"config": cfg.model_dump(mode="json"), "url": url, "deployed_at": time.time()}
        ).encode(),
        overwrite=True,
        namespace=platform_config.ray.namespace,
    )
    return url


def delete(platform_config: PlatformConfig, app: str | None = None) -> None:
    """Remove the application (Serve itself keeps running)."""
    from ray import serve

    name = app_name(platform_config, app)
    serve.delete(name)
    _kv()._internal_kv_del(f"{_KV_PREFIX}{name}".encode(), namespace=platform_config.ray.namespace)


def url_for(platform_config: PlatformConfig, cfg: ServeAppConfig) -> str:
    """Base URL of ``cfg``'s HTTP API on the running Serve proxy."""
    http = cfg.http or platform_config.http
    host, port = http.host, http.port
    try:  # the proxy's actual options (Serve may have been started before us)
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        if client is not None:  # no client: keep the configured endpoint
            actual = client.http_config
            host, port = actual.host or host, actual.port or port
    except Exception:  # noqa: BLE001 - fall back to the configured endpoint
        pass
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    scheme = "https" if http.ssl_certfile else "http"
    prefix = "" if cfg.route_prefix == "/" else cfg.route_prefix
    return f"{scheme}://{host}:{port}{prefix}"


def deployed(platform_config: PlatformConfig, app: str | None = None) -> dict[str, Any]:
    """What :func:`deploy` recorded: ``config``, ``url``, ``deployed_at``."""
    name = app_name(platform_config, app)
    raw = _kv()._internal_kv_get(
        f"{_KV_PREFIX}{name}".encode(), namespace=platform_config.ray.namespace
    )
    if not raw:
        raise NotFoundError(
            f"no serving application {name!r} was deployed with raymlp (run `raymlp serve deploy`)",
            kind="application",
            name=name,
        )
    return json.loads(raw)


def config_of(platform_config: PlatformConfig, app: str | None = None) -> ServeAppConfig:
    """The config the application was deployed with."""
    return ServeAppConfig.model_validate(deployed(platform_config, app)["config"])


def app_name(platform_config: PlatformConfig, app: str | None) -> str:
    """``app``, or the one application deployed with raymlp that is live (else the default)."""
    if app:
        return app
    ns = platform_config.ray.namespace
    keys = _kv()._internal_kv_list(_KV_PREFIX.encode(), namespace=ns) or []
    names = sorted(k.decode()[len(_KV_PREFIX) :] for k in keys)
    live = _live_app_names()
    for gone in [n for n in names if n not in live]:
        # Deleted behind raymlp's back (serve shutdown, a test's teardown): forget it, so
        # the default application is one that actually serves.
        _kv()._internal_kv_del(f"{_KV_PREFIX}{gone}".encode(), namespace=ns)
    names = [n for n in names if n in live]
    if len(names) == 1:
        return names[0]
    return DEFAULT_APP if not names or DEFAULT_APP in names else names[0]


def gateway_handle(platform_config: PlatformConfig, app: str | None = None) -> Any:
    """A DeploymentHandle on the Gateway (``await h.infer.remote({...})``)."""
    from ray import serve

    from raymlp.serving.app import GATEWAY

    return serve.get_deployment_handle(GATEWAY, app_name=app_name(platform_config, app))


def model_server_handle(platform_config: PlatformConfig, app: str | None = None) -> Any:
    """A DeploymentHandle on the primary ModelServer."""
    from ray import serve

    from raymlp.serving.app import MODEL_SERVER

    return serve.get_deployment_handle(MODEL_SERVER, app_name=app_name(platform_config, app))
