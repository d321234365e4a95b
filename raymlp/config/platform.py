"""``configs/platform.yaml``: storage, the Ray cluster, the platform actors, HTTP and auth.

Load with :func:`load_platform_config`::

    >>> from raymlp.config import load_platform_config
    >>> cfg = load_platform_config("configs/platform.yaml")
    >>> cfg.storage.root
    '/abs/path/.raymlp'
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from raymlp import _constants
from raymlp.config._base import (
    Duration,
    StrictModel,
    _check_name,
    hash_api_key,
    load_config,
    load_yaml,
)
from raymlp.config.monitoring import MonitoringConfig, load_monitoring_config
from raymlp.config.webhooks import WebhookTarget
from raymlp.errors import ConfigError

__all__ = [
    "StorageConfig",
    "RayConfig",
    "ActorOptions",
    "FeatureStoreSettings",
    "NearCacheSettings",
    "RegistryWebhook",
    "RegistrySettings",
    "MonitorSettings",
    "HTTPConfig",
    "Role",
    "Principal",
    "Tenant",
    "AuthConfig",
    "PlatformConfig",
    "load_platform_config",
]

_SUPPORTED_SCHEMES = ("file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


class StorageConfig(StrictModel):
    """Where every piece of platform state lives."""

    root: str = Field(
        ".raymlp",
        description=(
            "Storage root URI: a local path (relative paths resolve against the working directory "
            "at load time), file://, s3://bucket/prefix or gs://bucket/prefix. "
            "Nothing is ever written outside it. RAYMLP_STORAGE_ROOT overrides it."
        ),
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Object-store options passed to deltalake and pyarrow (e.g. AWS_REGION, "
            "AWS_ENDPOINT_URL, GOOGLE_SERVICE_ACCOUNT). Never put secrets here; use env vars."
        ),
    )

    @field_validator("root")
    @classmethod
    def _check_root(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("storage root '' is empty (rule: a path or URI)")
        if "://" in v:
            scheme, rest = v.split("://", 1)
            if scheme.lower() not in _SUPPORTED_SCHEMES:
                raise ValueError(
                    f"unsupported URI scheme {scheme!r} in {v!r} "
                    "(rule: a local path, file://, s3://, gs:// or az://)"
                )
            if scheme.lower() != "file" and not rest.strip("/"):
                raise ValueError(f"URI {v!r} names no bucket (rule: scheme://bucket[/prefix])")
            if scheme.lower() == "file":
                return str(Path(rest).expanduser().resolve())
            return v.rstrip("/")
        return str(Path(v).expanduser().resolve())


class RayConfig(StrictModel):
    """How to reach (or start) the Ray cluster."""

    address: str = Field(
        "auto",
        description=(
            "'auto' joins a running cluster and otherwise starts a local one; 'local' always "
            "starts an embedded one; or host:port / ray://host:10001."
        ),
    )
    namespace: str = Field(
        _constants.NAMESPACE, description="Ray namespace of the platform actors."
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs of a locally started cluster (default: all of them)."
    )
    dashboard_host: str = Field("127.0.0.1", description="Dashboard bind address (local cluster).")
    dashboard_port: int = Field(8265, ge=1, le=65535, description="Dashboard port (local cluster).")
    serve_ingress: Literal["auto", "haproxy", "proxy"] = Field(
        "auto",
        description=(
            "Ray Serve's HTTP ingress in a cluster raymlp starts (`raymlp up`, embedded): "
            "'haproxy' (HAProxy routes straight to the gateway replicas and retries a request "
            "whose replica died before answering; HTTP only), 'proxy' (Serve's Python proxy "
            "actor), 'auto' (haproxy unless http has TLS or no HAProxy binary is installed). "
            "A cluster raymlp joins keeps the ingress of its own `ray start` environment."
        ),
    )
    log_to_driver: bool = Field(
        True,
        description="Stream task and actor logs to this driver's console (false: they stay in the "
        "dashboard and the session's log files; the demo keeps its own progress lines readable).",
    )

    @field_validator("address")
    @classmethod
    def _check_address(cls, v: str) -> str:
        v = v.strip()
        if v in ("auto", "local") or v.startswith("ray://"):
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"ray address {v!r} is not understood (rule: 'auto', 'local', host:port or ray://host:port)"
            )
        return v


class ActorOptions(StrictModel):
    """Ray options of one platform actor."""

    num_cpus: float = Field(0.0, ge=0, description="CPUs reserved by the actor (0: IO-bound).")
    memory_mb: int | None = Field(None, ge=1, description="Memory reserved for the actor, MiB.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom resources, e.g. {'head': 0.01} to pin to a node."
    )
    max_concurrency: int = Field(
        32, ge=1, description="Concurrent calls the actor serves (threaded actor)."
    )


class NearCacheSettings(StrictModel):
    """The online-feature near-cache of each ModelServer replica (see docs/features.md)."""

    enabled: bool = Field(
        True,
        description=(
            "Keep a local, event-fed copy of the online rows a replica reads, so a repeated "
            "entity needs no actor call; writes are acknowledged only once every replica's "
            "copy dropped the rows they change."
        ),
    )
    max_mb: float = Field(
        64.0, gt=0, le=65536, description="Memory of one replica's copy, MiB (LRU by bytes)."
    )
    lease_s: float = Field(
        1.0,
        gt=0.05,
        le=30,
        description=(
            "How long a replica may use its copy without hearing from the store: the longest a "
            "write waits for a stalled or dead replica."
        ),
    )


class FeatureStoreSettings(StrictModel):
    """The feature_store actor."""

    actor: ActorOptions = Field(
        default_factory=lambda: ActorOptions(max_concurrency=128),
        description=(
            "Ray options. Each ModelServer replica's near-cache keeps one long poll open on "
            "each online store actor: keep max_concurrency well above the replica count."
        ),
    )
    near_cache: NearCacheSettings = Field(
        default_factory=NearCacheSettings, description="The replicas' near-caches."
    )
    online_shards: int = Field(
        1, ge=1, le=256, description="Online store shards (one actor each, keyed by entity hash)."
    )
    max_future_skew: Duration = Field(
        timedelta(minutes=5),
        description=(
            "How far into the future an event timestamp may lie (clock skew between writers) "
            "before push and ingest refuse the rows, e.g. '5m'."
        ),
    )

    @field_validator("max_future_skew")
    @classmethod
    def _skew(cls, v: timedelta) -> timedelta:
        if v < timedelta(0) or v > timedelta(days=1):
            raise ValueError(
                f"max_future_skew {v!r} is out of range (rule: between 0 and 1 day)"
            )
        return v


# --- registry ---

_WEBHOOK_DEFAULT_EVENTS = (
    "version_registered",
    "stage_changed",
    "alias_moved",
    "alias_deleted",
    "promotion_requested",
    "promotion_approved",
    "promotion_rejected",
)


class RegistryWebhook(WebhookTarget):
    """One HTTP endpoint that receives registry events (e.g. a CI/CD trigger).

    ``secret_env`` names a variable of the registry actor's process."""

    events: list[str] = Field(
        default_factory=lambda: list(_WEBHOOK_DEFAULT_EVENTS),
        description="Event kinds delivered ('*' for every kind).",
    )
    models: list[str] = Field(
        default_factory=list, description="Only events of these models (empty: every model)."
    )
    max_retries: int = Field(
        5, ge=0, le=20, description="Retries after a failed delivery (5xx, timeout, refused)."
    )


class RegistrySettings(StrictModel):
    """The registry actor."""

    actor: ActorOptions = Field(
        default_factory=lambda: ActorOptions(max_concurrency=256),
        description=(
            "Ray options. The registry is an asyncio actor: max_concurrency bounds concurrent "
            "calls, including long-polling subscribers (keep it well above their number)."
        ),
    )
    approval_required: bool = Field(
        True, description="Whether promotion to the 'production' alias needs an approval."
    )
    approval_overrides: dict[str, bool] = Field(
        default_factory=dict, description="Per-model override of approval_required."
    )
    approval_aliases: list[str] = Field(
        default_factory=lambda: ["production"],
        description="Aliases whose moves need an approved request when approval is required.",
    )
    webhooks: list[RegistryWebhook] = Field(
        default_factory=list, description="HTTP endpoints notified of registry events."
    )
    event_buffer: int = Field(
        10_000,
        ge=10,
        description=(
            "Recent events kept in memory for long-polling subscribers; one that falls further "
            "behind resynchronises from a snapshot."
        ),
    )
    compact_every: int = Field(
        100,
        ge=10,
        description="Event-table commits between compaction + checkpoint (keeps replay fast).",
    )
    max_unapproved_canary_weight: float = Field(
        10.0,
        ge=0,
        le=100,
        description=(
            "Highest canary weight (percent) a version may get before the approval policy of "
            "the model's protected aliases has approved it; more is a promotion (refused with "
            "permission_denied, rule max_unapproved_canary_weight). Shadows are not limited."
        ),
    )
    model_factory_modules: list[str] = Field(
        default_factory=lambda: ["raymlp", "torch.nn"],
        description=(
            "Modules a model.json factory may come from (a module and its submodules, e.g. "
            "'raymlp' allows 'raymlp.training.models:tabular_mlp'). Registration and every "
            "load refuse any other factory before importing it. Add your own model package "
            "here."
        ),
    )

    @field_validator("model_factory_modules")
    @classmethod
    def _factory_modules(cls, v: list[str]) -> list[str]:
        for m in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", m):
                raise ValueError(
                    f"model_factory_modules entry {m!r} is not a module name (rule: dotted "
                    "identifiers, e.g. 'mypkg.models')"
                )
        return v


class MonitorSettings(StrictModel):
    """The monitor actor (``monitor`` in platform.yaml; see the monitoring section below)."""

    actor: ActorOptions = Field(default_factory=ActorOptions, description="Ray options.")
    config_file: str | None = Field(
        None,
        description="Monitoring YAML (alert rules, drift, canary), read by load_platform_config "
        "(relative paths resolve against the working directory).",
    )
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig,
        description="Inline monitoring config (filled from config_file when that is set).",
    )
    principal: str = Field(
        "monitor",
        description=(
            "Service principal (no API key) the monitor acts as towards the registry and the "
            "feature store, e.g. when it advances or rolls back a canary. With auth on it must be "
            "in auth.principals."
        ),
    )
    metrics_host: str = Field("127.0.0.1", description="Bind address of the Prometheus endpoint.")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint. 0: a free port picked on the "
        "first start and kept across restarts (recorded in the monitor's event log; see "
        "p.monitor.metrics_url()). Set a fixed one for a production scrape config.",
    )
    ray_metrics: bool = Field(
        True, description="Also export the key series via ray.util.metrics (Ray dashboard)."
    )
    bucket: Duration = Field(
        timedelta(minutes=1), description="Time resolution of the in-memory windows."
    )
    retention: Duration = Field(
        timedelta(hours=6),
        description="How much traffic the windows keep (and replay from the log on restart).",
    )
    evaluate_interval_s: float = Field(
        10.0, gt=0, description="How often signals, alerts and canaries are evaluated."
    )
    max_tracked_requests: int = Field(
        200_000, ge=1000, description="Recent request ids kept to join feedback labels."
    )
    dedup_window: int = Field(
        200_000,
        ge=1000,
        description="Recent request ids remembered (per log) to drop re-sent prediction "
        "records and labels, e.g. a client's retry after a timeout; rebuilt from the logs on "
        "restart. A duplicate older than this many rows is not recognised.",
    )
    compact_every: int = Field(
        200, ge=10, description="Log commits between compaction + checkpoint of the tables."
    )


class HTTPConfig(StrictModel):
    """The Serve HTTP endpoint."""

    host: str = Field("127.0.0.1", description="Bind address of Serve's HTTP proxy.")
    port: int = Field(8000, ge=1, le=65535, description="Port of Serve's HTTP proxy.")
    ssl_keyfile: str | None = Field(
        None, description="TLS key file (enables HTTPS with ssl_certfile)."
    )
    ssl_certfile: str | None = Field(None, description="TLS certificate file.")
    request_timeout_s: float | None = Field(
        None, gt=0, description="End-to-end timeout of one HTTP request at the proxy."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> HTTPConfig:
        if bool(self.ssl_keyfile) != bool(self.ssl_certfile):
            raise ValueError(
                "ssl_keyfile and ssl_certfile must be set together "
                f"(got ssl_keyfile={self.ssl_keyfile!r}, ssl_certfile={self.ssl_certfile!r})"
            )
        return self


Role = Literal["viewer", "developer", "approver", "admin"]


def _default_roles() -> list[Role]:
    return ["viewer"]


class Principal(StrictModel):
    """A person or service that acts on the platform."""

    name: str = Field(description="Unique principal name (shown in audit events).")
    tenant: str = Field("default", description="The tenant whose models and views it sees.")
    roles: list[Role] = Field(
        default_factory=_default_roles,
        description="Roles: viewer (read), developer (write), approver (approve), admin (all).",
    )
    api_key_sha256: str | None = Field(
        None,
        description="SHA-256 hex of the principal's API key (`raymlp.config.hash_api_key`).",
    )

    @field_validator("name", "tenant")
    @classmethod
    def _names(cls, v: str) -> str:
        return _check_name(v, "name")

    @field_validator("api_key_sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError(
                f"api_key_sha256 {v[:12]!r}... is not a SHA-256 hex digest "
                "(rule: 64 lowercase hex chars; store the hash, never the key)"
            )
        return v


class Tenant(StrictModel):
    """An isolation unit: models and feature views belong to exactly one tenant."""

    name: str = Field(description="Unique tenant name.")
    description: str = Field("", description="Free text.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "tenant")


class AuthConfig(StrictModel):
    """Tenants, principals and their API keys (stored hashed)."""

    tenants: list[Tenant] = Field(
        default_factory=lambda: [Tenant(name="default")], description="Known tenants."
    )
    principals: list[Principal] = Field(
        default_factory=list,
        description="Known principals. Empty: auth is off and every caller is a local admin.",
    )
    default_principal: str | None = Field(
        None,
        description=(
            "Service principal (one without an API key) the CLI/SDK acts as when no API key is "
            "given; only where the platform secret is readable (on the cluster)."
        ),
    )
    secret_file: str | None = Field(
        None,
        description=(
            "File holding the platform secret that service tokens are signed with. Default: "
            "$RAYMLP_PLATFORM_SECRET, else <storage root>/_platform/secret (created by "
            "`raymlp up`, mode 0600)."
        ),
    )
    token_ttl_s: float = Field(
        900.0, gt=0, le=86400, description="Lifetime of a service token, in seconds."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AuthConfig:
        tenants = [t.name for t in self.tenants]
        if len(set(tenants)) != len(tenants):
            raise ValueError(f"tenant names {tenants!r} repeat (rule: unique)")
        names = [p.name for p in self.principals]
        if len(set(names)) != len(names):
            raise ValueError(f"principal names {names!r} repeat (rule: unique)")
        keys = [p.api_key_sha256 for p in self.principals if p.api_key_sha256]
        if len(set(keys)) != len(keys):
            raise ValueError("two principals share one api_key_sha256 (rule: unique keys)")
        for p in self.principals:
            if p.tenant not in tenants:
                raise ValueError(
                    f"principal {p.name!r} names tenant {p.tenant!r}, which is not in tenants "
                    f"{tenants!r} (rule: declare the tenant)"
                )
        if self.default_principal is not None and self.default_principal not in names:
            raise ValueError(
                f"default_principal {self.default_principal!r} is not a principal {names!r}"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.principals)

    def by_api_key(self, key: str) -> Principal | None:
        digest = hash_api_key(key)
        return next((p for p in self.principals if p.api_key_sha256 == digest), None)

    def by_name(self, name: str) -> Principal | None:
        return next((p for p in self.principals if p.name == name), None)


class PlatformConfig(StrictModel):
    """``configs/platform.yaml``: the whole platform's settings."""

    storage: StorageConfig = Field(default_factory=StorageConfig, description="Storage root.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster connection.")
    http: HTTPConfig = Field(default_factory=HTTPConfig, description="Serve HTTP endpoint.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Tenants and API keys.")
    feature_store: FeatureStoreSettings = Field(
        default_factory=FeatureStoreSettings, description="Feature store actor."
    )
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings, description="Registry actor."
    )
    monitor: MonitorSettings = Field(default_factory=MonitorSettings, description="Monitor actor.")


def _read_monitoring_file(data: dict[str, Any]) -> None:
    """Fill ``monitor.monitoring`` from ``monitor.config_file`` (read once, here: the actors get
    the content, never the path). An inline ``monitoring`` wins over the file."""
    monitor = data.get("monitor")
    if not isinstance(monitor, dict):
        return
    path = monitor.get("config_file")
    if not path or not isinstance(path, str) or "monitoring" in monitor:
        return
    resolved = str(Path(path).expanduser().resolve())
    data["monitor"] = {
        **monitor,
        "config_file": resolved,
        "monitoring": load_monitoring_config(resolved),
    }


def load_platform_config(path: str | os.PathLike[str] | None = None) -> PlatformConfig:
    """Load platform.yaml: ``path``, else ``$RAYMLP_CONFIG``, else ``configs/platform.yaml`` if it
    exists, else defaults. ``$RAYMLP_STORAGE_ROOT`` overrides ``storage.root``."""
    path = path or _constants.config_file()
    if path is None and Path(_constants.DEFAULT_CONFIG_FILE).is_file():
        path = _constants.DEFAULT_CONFIG_FILE
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        loaded = load_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source}: <root>: expected a mapping", file=source, field="<root>")
        data = dict(loaded or {})
    _read_monitoring_file(data)
    override = _constants.storage_root_override()
    if override:
        data["storage"] = {**(data.get("storage") or {}), "root": override}
    return load_config(PlatformConfig, data, source)
