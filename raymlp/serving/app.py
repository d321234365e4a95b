"""Building the Serve application from a :class:`~raymlp.config.ServeAppConfig`.

``build_app(cfg)`` binds ``Gateway`` → ``ModelServer`` (+ ``FallbackServer``) with every
deployment option from the config: replicas or autoscaling, ``max_ongoing_requests`` sized to
the batch (Serve's default of 5 would throttle a batching server), ``max_queued_requests``
(load shedding → 429), CPUs, and the batching settings as ``user_config`` (changeable live).
``serve_config(cfg, http)`` writes the same application as a Serve config file, so it deploys
with plain ``serve deploy serve.yaml`` too (through :func:`app_builder`)::

    from ray import serve
    serve.run(build_app(load_serve_config("configs/serve/churn.yaml")), name="churn")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ray import serve

from raymlp.config import (
    HTTPConfig,
    PlatformConfig,
    ServeAppConfig,
    ServeDeploymentOptions,
    ServeModelServerSettings,
    load_config,
    load_serve_config,
)
from raymlp.serving.gateway import Gateway
from raymlp.serving.model_server import ModelServer

if TYPE_CHECKING:
    from ray.serve import Deployment

__all__ = [
    "build_app",
    "app_builder",
    "serve_config",
    "deployment_options",
    "default_gateway_replicas",
    "http_options",
    "GATEWAY",
    "MODEL_SERVER",
    "FALLBACK_SERVER",
]

GATEWAY = "Gateway"
MODEL_SERVER = "ModelServer"
FALLBACK_SERVER = "FallbackServer"
#: the config parts that travel as user_config instead of init args / builder args
_BATCHING: dict[str, Any] = {"model_server": {"batching"}, "fallback_server": {"batching"}}
#: requests per gateway replica when the config does not size it
_GATEWAY_MAX_ONGOING = 256
#: cluster CPUs from which the gateway runs 2 replicas by default
_GATEWAY_HA_MIN_CPUS = 4
#: Serve's controller notices a dead replica on its next health check (Serve's default: every
#: 10 s) and only then starts the replacement: every deployment of ours checks every 2 s.
_HEALTH_CHECK_PERIOD_S = 2.0


def deployment_options(
    opts: ServeDeploymentOptions, max_ongoing: int, target_default: float
) -> dict[str, Any]:
    """Serve ``.options(...)`` of one deployment from its config section."""
    actor: dict[str, Any] = {"num_cpus": opts.num_cpus}
    if opts.memory_mb is not None:
        actor["memory"] = opts.memory_mb * 1024 * 1024
    out: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing,
        "max_queued_requests": opts.max_queued_requests,
        "ray_actor_options": actor,
    }
    if opts.max_queued_requests != -1:
        out["backpressure_config"] = {"status_code": 429, "retry_after_s": 1}
    if opts.autoscaling is not None:
        a = opts.autoscaling
        auto: dict[str, Any] = {
            "min_replicas": a.min_replicas,
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests or target_default,
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
        }
        if a.initial_replicas is not None:
            auto["initial_replicas"] = a.initial_replicas
        out["autoscaling_config"] = auto
    else:
        out["num_replicas"] = opts.num_replicas or 1
    return out


def default_gateway_replicas() -> int:
    """Gateway replicas when the config sets neither ``num_replicas`` nor autoscaling: 2 on
    a cluster of at least :data:`_GATEWAY_HA_MIN_CPUS` CPUs (a replica can die without the
    endpoint going with it), else 1 (a small machine keeps its cores for the models)."""
    import ray

    try:
        cpus = float(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else 0.0
    except Exception:  # noqa: BLE001 - no cluster view: the safe small default
        cpus = 0.0
    return 2 if cpus >= _GATEWAY_HA_MIN_CPUS else 1


def _server_options(s: ServeModelServerSettings) -> dict[str, Any]:
    opts = deployment_options(s, s.sized_max_ongoing_requests(), float(s.batching.max_batch_size))
    opts["user_config"] = s.batching.model_dump(mode="json")
    opts["health_check_period_s"] = _HEALTH_CHECK_PERIOD_S
    return opts


def build_app(cfg: ServeAppConfig, platform_config: PlatformConfig | None = None) -> Any:
    """The bound Serve application (``serve.run(build_app(cfg), name=cfg.name)``).

    ``platform_config``: the platform the replicas talk to (default: the one published on the
    cluster by ``raymlp up``, read when a replica starts).
    """
    # Batching travels as user_config only (applied by reconfigure), so changing it updates
    # the replicas in place instead of replacing them (init args would differ otherwise).
    data = cfg.model_dump(mode="json", exclude=_BATCHING)
    pdata = platform_config.model_dump(mode="json") if platform_config is not None else None
    # serve.deployment(cls, ...) returns a Deployment; its annotation only covers the decorator
    # form, and mypy keeps a decorated class (Gateway) as the class: hence the casts.
    server = cast("Deployment", serve.deployment(ModelServer, name=MODEL_SERVER))
    primary = server.options(**_server_options(cfg.model_server)).bind(data, "primary", pdata)
    fallback = None
    if cfg.fallback_server.enabled:
        fb = cast("Deployment", serve.deployment(ModelServer, name=FALLBACK_SERVER))
        fallback = fb.options(**_server_options(cfg.fallback_server)).bind(data, "fallback", pdata)
    g = cfg.gateway
    if g.num_replicas is None and g.autoscaling is None:
        g = g.model_copy(update={"num_replicas": default_gateway_replicas()})
    gw_opts = deployment_options(
        g, g.max_ongoing_requests or _GATEWAY_MAX_ONGOING, float(min(g.max_inflight, 64))
    )
    # A dead gateway replica leaves the proxy's routing set on its first failed request; the
    # controller's health check then replaces it.
    gw_opts["health_check_period_s"] = _HEALTH_CHECK_PERIOD_S
    return (
        cast("Deployment", Gateway)
        .options(name=GATEWAY, **gw_opts)
        .bind(data, primary, fallback, pdata)
    )


def app_builder(args: dict) -> Any:
    """Serve application builder for ``serve deploy``: ``args`` is ``{"config": {...}}`` (the
    serve config itself) or ``{"config_file": "path.yaml"}`` (readable where Serve runs)."""
    if "config" in args:
        cfg = load_config(ServeAppConfig, args["config"], "<serve args.config>")
    elif "config_file" in args:
        cfg = load_serve_config(args["config_file"])
    else:
        from raymlp.errors import ConfigError

        raise ConfigError(
            "serve args need 'config' (a mapping) or 'config_file' (a path)", field="args"
        )
    return build_app(cfg)


def http_options(http: HTTPConfig) -> dict[str, Any]:
    """Serve ``http_options`` (host, port, TLS, timeout) from an :class:`HTTPConfig`."""
    out: dict[str, Any] = {"host": http.host, "port": http.port}
    if http.ssl_keyfile:
        out["ssl_keyfile"] = http.ssl_keyfile
        out["ssl_certfile"] = http.ssl_certfile
    if http.request_timeout_s is not None:
        out["request_timeout_s"] = http.request_timeout_s
    return out


def serve_config(cfg: ServeAppConfig, http: HTTPConfig) -> dict[str, Any]:
    """A Serve config (``serve deploy FILE``) running the same application.

    ``http`` is the endpoint (the serve config's own ``http`` wins over the platform's). The
    batching settings are written as the model servers' ``user_config`` (not into ``args``), so
    editing them and re-running ``serve deploy`` reconfigures the replicas in place.
    """
    deployments = [
        {"name": MODEL_SERVER, "user_config": cfg.model_server.batching.model_dump(mode="json")}
    ]
    if cfg.fallback_server.enabled:
        deployments.append(
            {
                "name": FALLBACK_SERVER,
                "user_config": cfg.fallback_server.batching.model_dump(mode="json"),
            }
        )
    return {
        "proxy_location": "EveryNode",
        "http_options": http_options(cfg.http or http),
        "applications": [
            {
                "name": cfg.name,
                "route_prefix": cfg.route_prefix,
                "import_path": "raymlp.serving.app:app_builder",
                "args": {
                    "config": cfg.model_dump(mode="json", exclude_none=True, exclude=_BATCHING)
                },
                "deployments": deployments,
            }
        ],
    }
