"""All configuration models of raymlp (pydantic v2), and the loader that turns YAML into them.

Every YAML under ``configs/`` is parsed here. Models forbid unknown keys, describe every field,
and their validators quote the bad value and the rule. A wrong file fails at load time with one
line naming the file, the path to the field and the reason::

    >>> from raymlp.config import load_platform_config
    >>> cfg = load_platform_config("configs/platform.yaml")
    >>> cfg.storage.root
    '/abs/path/.raymlp'

    # a broken file:
    # raymlp.errors.ConfigError: configs/platform.yaml: storage.root: unsupported URI scheme
    #   'ftp' in 'ftp://x' (rule: a local path, file://, s3://, gs:// or az://)
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from raymlp import _constants
from raymlp.errors import ConfigError

__all__ = [
    "StrictModel",
    "Duration",
    "parse_duration",
    "format_duration",
    "hash_api_key",
    "StorageConfig",
    "RayConfig",
    "ActorOptions",
    "FeatureStoreSettings",
    "RegistrySettings",
    "HTTPConfig",
    "Role",
    "Principal",
    "Tenant",
    "AuthConfig",
    "PlatformConfig",
    "IngestSource",
    "IngestJobConfig",
    "MaterializeJobConfig",
    "load_yaml",
    "load_config",
    "load_platform_config",
    "format_validation_error",
    "FeatureDType",
    "KeyDType",
    "Entity",
    "FeatureField",
    "FeatureView",
    "OnDemandFeatureView",
    "FeatureRepo",
    "SplitConfig",
    "TrainDatasetConfig",
    "PreprocessingConfig",
    "TrainModelConfig",
    "OptimizerConfig",
    "DeepSpeedSettings",
    "TrainingLoopConfig",
    "ScalingSettings",
    "AshaSettings",
    "TuneSettings",
    "FallbackSettings",
    "QuantizeSettings",
    "PromotionSettings",
    "RegistryTarget",
    "TrainConfig",
    "TRAIN_OPTIMIZERS",
    "load_train_config",
]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


# ---------------------------------------------------------------------------------------------
# Shared field types
# ---------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"90s"``, ``"250ms"``, a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"duration {value!r} is not a duration (rule: like '30d', '12h', '90s')")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration {value!r} is negative (rule: >= 0)")
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])
    raise ValueError(
        f"duration {value!r} is not understood (rule: a number and a unit ms|s|m|h|d|w, like '30d')"
    )


def format_duration(td: timedelta) -> str:
    """The shortest exact ``"<n><unit>"`` spelling of a duration."""
    secs = td.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        n = secs / _DURATION_UNITS[unit]
        if n >= 1 and float(n).is_integer():
            return f"{int(n)}{unit}"
    return f"{int(round(secs * 1000))}ms"


#: A duration field: accepts ``"30d"`` etc., serialises back to that spelling.
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest stored in platform.yaml instead of the key itself."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")


def _check_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid name "
            "(rule: 1-63 chars of a-z, 0-9, '_' or '-', starting with a letter or digit)"
        )
    return value


# ---------------------------------------------------------------------------------------------
# platform.yaml
# ---------------------------------------------------------------------------------------------

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
    namespace: str = Field(_constants.NAMESPACE, description="Ray namespace of the platform actors.")
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs of a locally started cluster (default: all of them)."
    )
    dashboard_host: str = Field("127.0.0.1", description="Dashboard bind address (local cluster).")
    dashboard_port: int = Field(8265, ge=1, le=65535, description="Dashboard port (local cluster).")
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


class FeatureStoreSettings(StrictModel):
    """The feature_store actor."""

    actor: ActorOptions = Field(default_factory=ActorOptions, description="Ray options.")
    online_shards: int = Field(
        1, ge=1, le=256, description="Online store shards (one actor each, keyed by entity hash)."
    )


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


class RegistryWebhook(StrictModel):
    """One HTTP endpoint that receives registry events (e.g. a CI/CD trigger)."""

    url: str = Field(description="http(s) URL events are POSTed to (one JSON event per request).")
    secret_env: str | None = Field(
        None,
        description=(
            "Name of the environment variable (in the registry actor's process) holding the "
            "HMAC-SHA256 secret; the body is signed in the X-RayMLP-Signature header. "
            "None: deliveries are unsigned."
        ),
    )
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
    backoff_s: float = Field(
        0.5, gt=0, le=60, description="First retry delay; doubles per retry (with jitter)."
    )
    timeout_s: float = Field(5.0, gt=0, le=120, description="Timeout of one delivery attempt.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"webhook url {v!r} is not an http(s) URL (rule: http://host/...)")
        return v

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(
                f"secret_env {v!r} is not an environment variable name (rule: [A-Za-z_][A-Za-z0-9_]*)"
            )
        return v


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


class MonitorSettings(StrictModel):
    """The monitor actor (``monitor`` in platform.yaml; see the monitoring section below)."""

    actor: ActorOptions = Field(default_factory=ActorOptions, description="Ray options.")
    config_file: str | None = Field(
        None,
        description="Monitoring YAML (alert rules, drift, canary), read when platform.yaml is "
        "loaded (relative paths resolve against the working directory).",
    )
    monitoring: MonitoringConfig = Field(
        default_factory=lambda: MonitoringConfig(),
        description="Inline monitoring config (filled from config_file when that is set).",
    )
    metrics_host: str = Field("127.0.0.1", description="Bind address of the Prometheus endpoint.")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint (0: a free port, see "
        "p.monitor.metrics_url()). Set a fixed one for a Prometheus scrape config.",
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
    compact_every: int = Field(
        200, ge=10, description="Log commits between compaction + checkpoint of the tables."
    )

    @model_validator(mode="after")
    def _monitoring_file(self) -> MonitorSettings:
        # Read the file once, where platform.yaml is loaded; the actor gets its content.
        if self.config_file and "monitoring" not in self.model_fields_set:
            path = str(Path(self.config_file).expanduser().resolve())
            self.__dict__["monitoring"] = load_monitoring_config(path)
            self.__dict__["config_file"] = path
        return self


class HTTPConfig(StrictModel):
    """The Serve HTTP endpoint."""

    host: str = Field("127.0.0.1", description="Bind address of Serve's HTTP proxy.")
    port: int = Field(8000, ge=1, le=65535, description="Port of Serve's HTTP proxy.")
    ssl_keyfile: str | None = Field(None, description="TLS key file (enables HTTPS with ssl_certfile).")
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


class Principal(StrictModel):
    """A person or service that acts on the platform."""

    name: str = Field(description="Unique principal name (shown in audit events).")
    tenant: str = Field("default", description="The tenant whose models and views it sees.")
    roles: list[Role] = Field(
        default_factory=lambda: ["viewer"],
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
        None, description="Principal the CLI/SDK acts as when no API key is given."
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


# ---------------------------------------------------------------------------------------------
# Job configs (configs/jobs/*.yaml): ingest, materialize
# ---------------------------------------------------------------------------------------------


class IngestSource(StrictModel):
    """One source to load into one feature view."""

    view: str = Field(description="The feature view the rows belong to.")
    path: str = Field(description="Parquet/CSV file or directory, local path or URI.")


class IngestJobConfig(StrictModel):
    """``python -m jobs.ingest --config ...``: apply definitions, ingest sources, materialize."""

    features: str | None = Field(
        None, description="Feature definitions YAML applied first (idempotent); optional."
    )
    sources: list[IngestSource] = Field(
        default_factory=list, description="What to ingest, in order (one Delta commit each)."
    )
    materialize: bool = Field(
        True, description="Materialize the online views afterwards (incremental)."
    )

    @field_validator("sources")
    @classmethod
    def _some_sources(cls, v: list[IngestSource]) -> list[IngestSource]:
        if not v:
            raise ValueError("sources [] is empty (rule: at least one {view, path})")
        return v


class MaterializeJobConfig(StrictModel):
    """``python -m jobs.materialize --config ...``: load changes into the online store."""

    views: list[str] = Field(
        default_factory=list, description="Views to materialize (empty: every online view)."
    )
    start: str | None = Field(None, description="Only rows with event time >= start (ISO 8601).")
    end: str | None = Field(None, description="Only rows with event time <= end (ISO 8601).")
    full: bool = Field(False, description="Re-read every file, not only what changed.")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def format_validation_error(err: PydanticValidationError, source: str) -> ConfigError:
    """One-line ConfigError naming the file, the dotted path of the first bad field and why."""
    first = err.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if first["type"] == "extra_forbidden":
        msg = f"unknown key {first['loc'][-1]!r} (rule: only documented keys are allowed)"
    elif first["type"] == "missing":
        msg = "required field is missing"
    elif "input" in first and not isinstance(first["input"], (dict, list)) and "got" not in msg:
        if repr(first["input"]) not in msg:
            msg = f"{msg} (got {first['input']!r})"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return ConfigError(
        f"{source}: {field}: {msg}{suffix}", file=source, field=field, reason=msg
    )


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file, turning any read/parse problem into a one-line ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found", file=source, reason="not found") from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read: {e.strerror}", file=source) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"{source}: {where}: invalid YAML: {problem}", file=source, field=where, reason=problem
        ) from None


def load_config(model: type[M], data: Any, source: str = "<config>") -> M:
    """Validate already-parsed data (dict) into ``model``; errors name ``source`` and the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: <root>: expected a mapping, got {type(data).__name__}",
            file=source,
            field="<root>",
        )
    try:
        return model.model_validate(data)
    except PydanticValidationError as e:
        raise format_validation_error(e, source) from None


def load_config_file(model: type[M], path: str | os.PathLike[str]) -> M:
    """Load a YAML file into ``model``."""
    return load_config(model, load_yaml(path), str(path))


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
    override = _constants.storage_root_override()
    if override:
        data["storage"] = {**(data.get("storage") or {}), "root": override}
    return load_config(PlatformConfig, data, source)


# --- feature definitions (features) ---
# The YAML of ``configs/features/*.yaml`` (``raymlp features apply FILE``) and the same objects in
# Python. Names of entities, views and features become Delta column names and ``view__feature``
# output columns, so they are plain identifiers: no leading ``_`` (reserved for internal columns
# such as ``_seq``) and no ``__`` (the separator of output columns).

#: Value types of features. ``timestamp`` is a UTC timestamp (microseconds).
FeatureDType = Literal["int32", "int64", "float32", "float64", "string", "bool", "timestamp"]
#: Value types of entity join keys.
KeyDType = Literal["string", "int64"]

_FEATURE_OBJECT_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_COLUMN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")


def _check_feature_object_name(value: str, what: str) -> str:
    if not _FEATURE_OBJECT_RE.match(value) or "__" in value:
        raise ValueError(
            f"{what} name {value!r} is not valid (rule: 1-63 chars of a-z, 0-9, '_', starting "
            "with a letter, no '__')"
        )
    return value


def _check_column_name(value: str, what: str) -> str:
    if not _COLUMN_RE.match(value) or "__" in value:
        raise ValueError(
            f"{what} {value!r} is not a valid column name (rule: letters, digits and '_', "
            "starting with a letter, no '__')"
        )
    return value


class Entity(StrictModel):
    """A thing features describe (a customer, a card), identified by its join key(s).

    Example::

        Entity(name="customer", join_keys=["customer_id"])
    """

    name: str = Field(description="Unique entity name.")
    join_keys: list[str] = Field(
        min_length=1, description="Columns that identify one entity (usually one)."
    )
    value_type: KeyDType = Field(
        "string", description="Type of every join key column: string or int64."
    )
    description: str = Field("", description="Free text.")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_feature_object_name(v, "entity")

    @field_validator("join_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            _check_column_name(k, "join key")
        if len(set(v)) != len(v):
            raise ValueError(f"join_keys {v!r} repeat (rule: unique)")
        return v


class FeatureField(StrictModel):
    """One typed column of a feature view (or of an on-demand view's request data)."""

    name: str = Field(description="Column name.")
    dtype: FeatureDType = Field(
        description="int32, int64, float32, float64, string, bool or timestamp (UTC)."
    )
    description: str = Field("", description="Free text.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_column_name(v, "feature")


def _unique_fields(fields: list[FeatureField], where: str) -> None:
    names = [f.name for f in fields]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where} names {dupes!r} more than once (rule: unique feature names)")


class FeatureView(StrictModel):
    """Features of one or more entities, stored in one Delta table ``<root>/features/<name>``.

    ``ttl`` bounds how old a value may be: historical retrieval only matches rows with
    ``entity_ts - ttl < feature_ts <= entity_ts`` and online reads report ``expired`` for values
    older than ``ttl``. ``0`` means values never expire.

    Example (YAML)::

        name: customer_profile
        entities: [customer]
        ttl: 30d
        schema:
          - {name: tenure_months, dtype: int64}
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_by_name=True, validate_by_alias=True
    )

    name: str = Field(description="Unique view name (also the Delta table's directory).")
    entities: list[str] = Field(min_length=1, description="Names of the entities it describes.")
    timestamp_field: str = Field(
        "event_timestamp", description="Column holding each row's event time (timezone-aware)."
    )
    ttl: Duration = Field(
        timedelta(0), description="How long a value stays valid, e.g. '30d' (0: forever)."
    )
    online: bool = Field(True, description="Whether the view is served from the online store.")
    features: list[FeatureField] = Field(
        alias="schema", min_length=1, description="The feature columns (YAML key: schema)."
    )
    description: str = Field("", description="Free text.")
    owner: str = Field("", description="Who answers for this view (team or e-mail).")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_feature_object_name(v, "feature view")

    @field_validator("timestamp_field")
    @classmethod
    def _ts(cls, v: str) -> str:
        return _check_column_name(v, "timestamp_field")

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: timedelta) -> timedelta:
        if v < timedelta(0):
            raise ValueError(f"ttl {v!r} is negative (rule: >= 0; 0 means no expiry)")
        return v

    @model_validator(mode="after")
    def _columns(self) -> FeatureView:
        _unique_fields(self.features, f"feature view {self.name!r}")
        if len(set(self.entities)) != len(self.entities):
            raise ValueError(f"entities {self.entities!r} repeat (rule: unique)")
        clash = [f.name for f in self.features if f.name == self.timestamp_field]
        if clash:
            raise ValueError(
                f"feature {clash[0]!r} is also the timestamp_field (rule: distinct columns)"
            )
        return self


class OnDemandFeatureView(StrictModel):
    """Features computed at request time by a Python function, identically online and offline.

    The function (``udf``, an import path ``module:function``) receives a ``dict`` of numpy arrays:
    one per source feature, named ``view__feature``, and one per request field; it returns a
    ``dict`` with one array per declared output feature.

    Example (YAML)::

        name: customer_ratios
        sources: [customer_profile:monthly_charges, customer_profile:tenure_months]
        udf: raymlp.features.examples:charges_per_tenure
        schema:
          - {name: charges_per_tenure, dtype: float64}
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_by_name=True, validate_by_alias=True
    )

    name: str = Field(description="Unique name among feature views and on-demand views.")
    sources: list[str] = Field(
        min_length=1, description="Input feature references 'view:feature'."
    )
    request_schema: list[FeatureField] = Field(
        default_factory=list, description="Inputs supplied with each request / entity row."
    )
    udf: str = Field(description="Import path of the function, 'package.module:function'.")
    features: list[FeatureField] = Field(
        alias="schema", min_length=1, description="The output features (YAML key: schema)."
    )
    description: str = Field("", description="Free text.")
    owner: str = Field("", description="Who answers for it.")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_feature_object_name(v, "on-demand feature view")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        for ref in v:
            view, sep, feat = ref.partition(":")
            if not sep or not view or not feat:
                raise ValueError(f"source {ref!r} is not a feature reference (rule: 'view:feature')")
        return v

    @field_validator("udf")
    @classmethod
    def _udf(cls, v: str) -> str:
        mod, sep, fn = v.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", mod) or not fn.isidentifier():
            raise ValueError(f"udf {v!r} is not an import path (rule: 'package.module:function')")
        return v

    @model_validator(mode="after")
    def _columns(self) -> OnDemandFeatureView:
        _unique_fields(self.features, f"on-demand view {self.name!r}")
        _unique_fields(self.request_schema, f"request_schema of {self.name!r}")
        return self


class FeatureRepo(StrictModel):
    """A feature definition file: entities, feature views and on-demand views.

    Load one with ``load_config_file(FeatureRepo, "configs/features/churn.yaml")``.
    """

    entities: list[Entity] = Field(default_factory=list, description="Entities.")
    feature_views: list[FeatureView] = Field(default_factory=list, description="Feature views.")
    on_demand_feature_views: list[OnDemandFeatureView] = Field(
        default_factory=list, description="On-demand (request-time) feature views."
    )

    @model_validator(mode="after")
    def _unique(self) -> FeatureRepo:
        ents = [e.name for e in self.entities]
        if len(set(ents)) != len(ents):
            raise ValueError(f"entity names {ents!r} repeat (rule: unique)")
        views = [v.name for v in self.feature_views] + [
            v.name for v in self.on_demand_feature_views
        ]
        dupes = sorted({n for n in views if views.count(n) > 1})
        if dupes:
            raise ValueError(
                f"view names {dupes!r} repeat (rule: unique across feature_views and "
                "on_demand_feature_views)"
            )
        return self


# --- training config (training) ---
# `configs/train/*.yaml`: what `raymlp train` / `python -m jobs.train` runs. Owned by the training
# package (raymlp/training/); see docs/training.md for the full reference.

TRAIN_OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
_SEARCH_KINDS = ("choice", "uniform", "loguniform", "randint")
# Search-space keys are dotted paths into TrainConfig; only these sections may be tuned (the data,
# the resources and the registry target stay fixed across trials so trials are comparable).
_TUNABLE_PREFIXES = ("optimizer.", "model.kwargs.", "training.", "deepspeed.")
_FEATURE_REF_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*:[A-Za-z_][A-Za-z0-9_]*$")
_IMPORT_PATH_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class SplitConfig(StrictModel):
    """Seeded train/validation/test split by entity: one entity's rows all land in one split."""

    train: float = Field(0.7, gt=0, lt=1, description="Fraction of entities used for training.")
    validation: float = Field(
        0.15, gt=0, lt=1, description="Fraction of entities for validation (Tune's metric)."
    )
    test: float = Field(
        0.15, gt=0, lt=1, description="Fraction of entities held out for the final evaluation."
    )
    seed: int = Field(42, description="Seed of the entity hash: same seed, same split.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions train+validation+test = {total:g} (rule: they sum to 1)"
            )
        return self


class TrainDatasetConfig(StrictModel):
    """Where the training set comes from: a labelled entity table joined point-in-time with
    feature-store features (``features``) and/or feature columns of the table itself
    (``columns``)."""

    entity_table: str = Field(
        description=(
            "Labelled entity table: a Parquet or CSV file/directory or a Delta table (local path "
            "or URI) with the entity keys, the timestamp and the label."
        )
    )
    entity_table_version: int | None = Field(
        None, ge=0, description="Delta version of the entity table to read (default: latest)."
    )
    entity_keys: list[str] = Field(
        min_length=1, description="Join-key columns; the split never puts one entity in two splits."
    )
    timestamp_column: str = Field(
        "event_timestamp", description="Event time of each labelled row (point-in-time join)."
    )
    label_column: str = Field(description="Binary label column (bool, 0/1 or strings).")
    positive_label: bool | int | float | str = Field(
        True, description="Value of label_column that means the positive class."
    )
    class_names: list[str] = Field(
        default_factory=lambda: ["negative", "positive"],
        min_length=2,
        max_length=2,
        description="Names of class 0 and class 1, returned as the prediction by serving.",
    )
    features: list[str] = Field(
        default_factory=list,
        description="Feature references 'view:feature' fetched point-in-time from the store.",
    )
    columns: list[str] = Field(
        default_factory=list,
        description="Feature columns taken as they are from the entity table (request-time data).",
    )
    as_of_versions: dict[str, int] | None = Field(
        None,
        description=(
            "Pin feature views to Delta versions {view: version} (default: the latest version "
            "of each, recorded in lineage so the run can be reproduced)."
        ),
    )
    split: SplitConfig = Field(default_factory=SplitConfig, description="Split by entity.")
    min_rows: int = Field(
        20, ge=1, description="Fewer labelled rows than this is an error (an empty table is)."
    )

    @field_validator("features")
    @classmethod
    def _refs(cls, v: list[str]) -> list[str]:
        for ref in v:
            if not _FEATURE_REF_RE.match(ref):
                raise ValueError(
                    f"feature reference {ref!r} is not 'view:feature' (rule: view:feature)"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"feature references {v!r} repeat (rule: unique)")
        return v

    @model_validator(mode="after")
    def _has_features(self) -> TrainDatasetConfig:
        if not self.features and not self.columns:
            raise ValueError(
                "no features: set dataset.features (view:feature refs) and/or dataset.columns "
                "(rule: at least one input feature)"
            )
        reserved = {*self.entity_keys, self.timestamp_column, self.label_column}
        clash = sorted(reserved & set(self.columns))
        if clash:
            raise ValueError(
                f"columns {clash!r} are keys, the timestamp or the label (rule: inputs only)"
            )
        return self


class PreprocessingConfig(StrictModel):
    """Feature engineering fitted on the train split only, saved with the model, and applied by
    the same code at serving time."""

    categorical_encoding: Literal["onehot", "ordinal"] = Field(
        "onehot", description="How string/categorical inputs become numbers."
    )
    max_categories: int = Field(
        50, ge=1, description="Most frequent categories kept per column; the rest map to unknown."
    )
    min_category_count: int = Field(
        1, ge=1, description="Categories seen fewer times than this in train map to unknown."
    )
    categorical: list[str] = Field(
        default_factory=list, description="Columns forced categorical (e.g. integer codes)."
    )
    numeric: list[str] = Field(default_factory=list, description="Columns forced numeric.")
    profile_sample_rows: int = Field(
        100_000,
        ge=100,
        description="Rows sampled from train for the reference profile (quantiles, histograms).",
    )


class TrainModelConfig(StrictModel):
    """The network: any ``torch.nn.Module`` factory, by import path."""

    factory: str = Field(
        "raymlp.training.models:tabular_mlp",
        description=(
            "'module:function' called as factory(input_dim, **kwargs) -> torch.nn.Module mapping "
            "(n, input_dim) float32 to (n,) or (n, 1) logits."
        ),
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the factory (tunable)."
    )

    @field_validator("factory")
    @classmethod
    def _import_path(cls, v: str) -> str:
        if not _IMPORT_PATH_RE.match(v):
            raise ValueError(f"model factory {v!r} is not an import path (rule: 'module:function')")
        return v


class OptimizerConfig(StrictModel):
    """The optimizer DeepSpeed steps (Adam/AdamW use torch's implementation: no JIT build)."""

    name: str = Field("adamw", description=f"One of {', '.join(TRAIN_OPTIMIZERS)}.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        name = v.strip().lower()
        if name not in TRAIN_OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {v!r} (rule: one of {', '.join(TRAIN_OPTIMIZERS)})"
            )
        return name


class DeepSpeedSettings(StrictModel):
    """DeepSpeed engine settings; the JSON config is generated from these."""

    zero_stage: int = Field(2, description="ZeRO stage: 0 (off), 1, 2 or 3.")
    offload_optimizer: bool = Field(
        False, description="Keep optimizer state on CPU (ZeRO stage >= 1)."
    )
    offload_params: bool = Field(False, description="Keep parameters on CPU (ZeRO stage 3).")
    bf16: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "bf16 mixed precision: 'auto' = on where the accelerator supports it (recent GPUs), "
            "off on CPU; true on hardware without bf16 falls back to fp32 (logged and recorded)."
        ),
    )
    gradient_clipping: float = Field(1.0, ge=0, description="Max gradient norm (0: off).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per step.")
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Raw DeepSpeed config keys merged over the generated config (escape hatch).",
    )

    @field_validator("zero_stage")
    @classmethod
    def _stage(cls, v: int) -> int:
        if v not in (0, 1, 2, 3):
            raise ValueError(f"ZeRO stage {v} is not supported (rule: 0, 1, 2 or 3)")
        return v

    @model_validator(mode="after")
    def _offload(self) -> DeepSpeedSettings:
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1 (got zero_stage 0)")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(
                f"offload_params needs zero_stage 3 (got zero_stage {self.zero_stage})"
            )
        return self


class TrainingLoopConfig(StrictModel):
    """The loop each Ray Train worker runs."""

    epochs: int = Field(5, ge=1, description="Passes over the train split (ASHA's max_t).")
    batch_size: int = Field(256, ge=1, description="Micro-batch size per worker.")
    shuffle_buffer_rows: int = Field(
        10_000, ge=0, description="Local shuffle buffer of each worker's shard (0: no shuffle)."
    )
    seed: int = Field(0, description="Seed of weight init and shuffling.")
    max_failures: int = Field(
        2,
        ge=-1,
        description="Worker failures survived by resuming from the last checkpoint (-1: always).",
    )
    checkpoints_to_keep: int = Field(
        2, ge=1, description="Best checkpoints kept per run (the latest is always kept too)."
    )


class ScalingSettings(StrictModel):
    """Ray Train workers of one trial."""

    num_workers: int = Field(2, ge=1, description="Data-parallel workers (one process each).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker.")
    use_gpu: bool = Field(False, description="One GPU per worker (NCCL); else CPU (gloo).")


class AshaSettings(StrictModel):
    """ASHA early stopping of bad trials (``ray.tune.schedulers.ASHAScheduler``)."""

    enabled: bool = Field(True, description="Stop unpromising trials early.")
    grace_period: int = Field(1, ge=1, description="Epochs every trial runs before it can stop.")
    reduction_factor: float = Field(2.0, gt=1, description="Keep 1/reduction_factor per rung.")


_METRIC_MODES = {"val_auc": "max", "val_accuracy": "max", "val_loss": "min"}


class TuneSettings(StrictModel):
    """Hyperparameter search with Ray Tune. With no search space and one sample, a single
    training run is made without Tune."""

    search_space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Dotted config path -> one of {choice: [..]}, {uniform: [lo, hi]}, "
            "{loguniform: [lo, hi]}, {randint: [lo, hi]} (hi exclusive). Tunable: optimizer.*, "
            "model.kwargs.*, training.*, deepspeed.*."
        ),
    )
    num_samples: int = Field(1, ge=1, description="Trials to sample.")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials running at once (default: as many as resources allow)."
    )
    time_budget_s: float | None = Field(
        None, gt=0, description="Stop starting/running trials after this many seconds."
    )
    metric: Literal["val_auc", "val_accuracy", "val_loss"] = Field(
        "val_auc", description="Validation metric that ranks trials and checkpoints."
    )
    mode: Literal["max", "min"] | None = Field(
        None, description="max or min (default: implied by the metric)."
    )
    asha: AshaSettings = Field(default_factory=AshaSettings, description="Early stopping.")

    @field_validator("search_space")
    @classmethod
    def _space(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key, spec in v.items():
            if not key.startswith(_TUNABLE_PREFIXES) or key.endswith("."):
                raise ValueError(
                    f"search_space key {key!r} cannot be tuned "
                    f"(rule: a path under {', '.join(p.rstrip('.') for p in _TUNABLE_PREFIXES)})"
                )
            if (
                not isinstance(spec, dict)
                or len(spec) != 1
                or next(iter(spec)) not in _SEARCH_KINDS
            ):
                raise ValueError(
                    f"search_space.{key} = {spec!r} (rule: one of "
                    f"{', '.join(_SEARCH_KINDS)} with its arguments, e.g. {{loguniform: [1e-4, 1e-2]}})"
                )
            kind, args = next(iter(spec.items()))
            if kind == "choice":
                if not isinstance(args, list) or not args:
                    raise ValueError(
                        f"search_space.{key}.choice = {args!r} (rule: a non-empty list)"
                    )
                continue
            if (
                not isinstance(args, list)
                or len(args) != 2
                or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
                or not args[0] < args[1]
            ):
                raise ValueError(
                    f"search_space.{key}.{kind} = {args!r} (rule: [low, high], low < high)"
                )
            if kind == "loguniform" and args[0] <= 0:
                raise ValueError(f"search_space.{key}.loguniform = {args!r} (rule: low > 0)")
            if kind == "randint" and not all(isinstance(a, int) for a in args):
                raise ValueError(f"search_space.{key}.randint = {args!r} (rule: integers)")
        return v

    @field_validator("search_space")
    @classmethod
    def _paths(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        sections: dict[str, type[StrictModel]] = {
            "optimizer": OptimizerConfig,
            "training": TrainingLoopConfig,
            "deepspeed": DeepSpeedSettings,
        }
        for key in v:
            if key.startswith("model.kwargs."):
                continue
            section, _, leaf = key.partition(".")
            fields = sections[section].model_fields
            if leaf not in fields or leaf == "extra":
                raise ValueError(
                    f"search_space key {key!r} names no setting (rule: one of "
                    f"{', '.join(f'{section}.{f}' for f in fields if f != 'extra')})"
                )
        return v

    @model_validator(mode="after")
    def _mode(self) -> TuneSettings:
        implied = _METRIC_MODES[self.metric]
        if self.mode is None:
            self.__dict__["mode"] = implied
        elif self.mode != implied:
            raise ValueError(
                f"mode {self.mode!r} contradicts metric {self.metric!r} (rule: {implied})"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether Tune runs (a search space or several samples)."""
        return bool(self.search_space) or self.num_samples > 1


class FallbackSettings(StrictModel):
    """The small model served when the primary fails: trained on the same split, registered
    with the primary and named in its lineage."""

    enabled: bool = Field(True, description="Train and register a fallback model.")
    kind: Literal["logistic_regression", "distilled_mlp"] = Field(
        "logistic_regression",
        description="Logistic regression on the labels, or a small MLP distilled from the primary.",
    )
    model_name: str | None = Field(
        None,
        description="Registry name of the fallback (default: '<registry.model_name>-fallback').",
    )
    hidden_dims: list[int] = Field(
        default_factory=lambda: [16], description="Hidden layers of the distilled student."
    )
    epochs: int = Field(5, ge=1, description="Passes over the train split.")
    lr: float = Field(0.05, gt=0, description="Adam learning rate.")
    batch_size: int = Field(256, ge=1, description="Mini-batch size.")


class QuantizeSettings(StrictModel):
    """An INT8 dynamic-quantized copy of the primary for CPU serving (``variant='int8'``)."""

    enabled: bool = Field(False, description="Produce the INT8 variant and record its deltas.")
    max_auc_drop: float = Field(
        0.01,
        ge=0,
        description="Above this test-AUC loss the variant is recorded as not recommended.",
    )


class PromotionSettings(StrictModel):
    """The gate: request promotion only when the new model beats the current holder of the
    alias on the same test split by ``margin``. Approvals are never bypassed."""

    enabled: bool = Field(True, description="Run the gate after registering.")
    alias: str = Field("production", description="Alias to request.")
    metric: Literal["auc", "accuracy", "log_loss", "brier", "ece"] = Field(
        "auc", description="Test metric compared (auc/accuracy: higher wins; others: lower wins)."
    )
    margin: float = Field(0.0, ge=0, description="Required improvement over the current holder.")
    min_value: float | None = Field(
        None, description="Absolute bar the metric must reach even when no model holds the alias."
    )


class RegistryTarget(StrictModel):
    """Where the model goes in the registry."""

    model_name: str = Field(description="Registered model name, e.g. 'customer-churn'.")
    experiment: str | None = Field(
        None, description="Experiment of the runs (default: the model name)."
    )
    description: str = Field("", description="One paragraph for the model card.")
    owner: str = Field("", description="Owner shown in the model card.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags of the runs.")

    @field_validator("model_name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "model name")


class TrainConfig(StrictModel):
    """``configs/train/*.yaml``: one training job (dataset → Tune × Train + DeepSpeed → registry).

    Load with :func:`load_train_config`.
    """

    dataset: TrainDatasetConfig = Field(description="Training data.")
    preprocessing: PreprocessingConfig = Field(
        default_factory=PreprocessingConfig, description="Feature engineering."
    )
    model: TrainModelConfig = Field(default_factory=TrainModelConfig, description="The network.")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Optimizer.")
    training: TrainingLoopConfig = Field(
        default_factory=TrainingLoopConfig, description="Worker loop."
    )
    deepspeed: DeepSpeedSettings = Field(
        default_factory=DeepSpeedSettings, description="DeepSpeed."
    )
    scaling: ScalingSettings = Field(default_factory=ScalingSettings, description="Workers.")
    tune: TuneSettings = Field(default_factory=TuneSettings, description="Hyperparameter search.")
    fallback: FallbackSettings = Field(
        default_factory=FallbackSettings, description="Fallback model."
    )
    quantize: QuantizeSettings = Field(
        default_factory=QuantizeSettings, description="INT8 variant."
    )
    promotion: PromotionSettings = Field(
        default_factory=PromotionSettings, description="Promotion gate."
    )
    registry: RegistryTarget = Field(description="Registry target.")


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Load a ``configs/train/*.yaml`` file; a bad file raises one ConfigError naming the field.

    Example::

        cfg = load_train_config("configs/train/churn.yaml")
        cfg.deepspeed.zero_stage     # 2
    """
    return load_config_file(TrainConfig, path)


# --- monitoring config (monitor) ---

#: Signals an alert rule can watch, with the labels each series carries. ``by`` (version, route,
#: tenant) splits the performance and accuracy signals further.
MONITOR_METRICS: dict[str, tuple[str, ...]] = {
    "request_count": ("model",),
    "request_rate": ("model",),
    "error_rate": ("model",),
    "latency_p50_seconds": ("model",),
    "latency_p99_seconds": ("model",),
    "accuracy": ("model",),
    "auc": ("model",),
    "feedback_count": ("model",),
    "feature_drift_psi": ("model", "feature"),
    "feature_drift_ks": ("model", "feature"),
    "feature_drift_wasserstein": ("model", "feature"),
    "feature_drift_js": ("model", "feature"),
    "feature_drifted": ("model", "feature"),
    "drifted_feature_share": ("model",),
    "prediction_drift_psi": ("model",),
    "feature_missing_ratio": ("model", "feature"),
    "feature_out_of_range_ratio": ("model", "feature"),
    "schema_violation_ratio": ("model",),
    "feature_freshness_seconds": ("view",),
    "fairness_disparate_impact": ("model", "attribute"),
    "fairness_accuracy_gap": ("model", "attribute"),
    "prediction_log_dropped": ("source",),
}
#: Signals a rule may split with ``by``.
MONITOR_SPLITTABLE = frozenset(
    {"request_count", "request_rate", "error_rate", "latency_p50_seconds", "latency_p99_seconds",
     "accuracy", "auc", "feedback_count"}
)
Severity = Literal["info", "warning", "critical"]
_RULE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,79}$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")


class AlertRule(StrictModel):
    """One alert rule: ``metric condition threshold`` over a sliding ``window``, held ``for``
    a while before it fires. One alert per matching series (e.g. per feature), deduplicated."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_default=True, populate_by_name=True
    )

    name: str = Field(description="Unique rule name (the ``rule`` label of alerts).")
    metric: str = Field(description=f"Signal watched: one of {', '.join(MONITOR_METRICS)}.")
    condition: Literal[">", ">=", "<", "<=", "==", "!="] = Field(
        ">", description="Comparison of the signal with the threshold that means 'bad'."
    )
    threshold: float = Field(description="The value compared against.")
    window: Duration = Field(
        timedelta(minutes=5), description="Sliding window the signal is computed over."
    )
    for_: Duration = Field(
        timedelta(0),
        alias="for",
        description="How long the condition must hold before the alert fires (pending until).",
    )
    severity: Severity = Field("warning", description="info, warning or critical.")
    match: dict[str, str] = Field(
        default_factory=dict,
        description="Only series whose labels equal these (e.g. {model: customer-churn}).",
    )
    by: list[Literal["version", "route", "tenant"]] = Field(
        default_factory=list,
        description="Split performance/accuracy signals per version, route and/or tenant.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels attached to the alert (team, runbook...)."
    )
    min_count: int = Field(
        1,
        ge=0,
        description="Series with fewer observations in the window are not evaluated "
        "(requests, labelled requests or feature values, as the signal counts them).",
    )
    description: str = Field("", description="Shown with the alert.")

    @field_validator("name")
    @classmethod
    def _rule_name(cls, v: str) -> str:
        if not _RULE_NAME_RE.match(v):
            raise ValueError(
                f"rule name {v!r} is not valid (rule: a letter, then up to 79 of A-Z a-z 0-9 _ -)"
            )
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in MONITOR_METRICS:
            raise ValueError(
                f"metric {v!r} is not a monitor signal (rule: one of {', '.join(MONITOR_METRICS)})"
            )
        return v

    @field_validator("match", "labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not _LABEL_RE.match(k):
                raise ValueError(f"label name {k!r} is not valid (rule: [a-zA-Z_][a-zA-Z0-9_]*)")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: timedelta) -> timedelta:
        if v.total_seconds() <= 0:
            raise ValueError(f"window {format_duration(v)!r} is empty (rule: > 0)")
        return v

    @model_validator(mode="after")
    def _by(self) -> AlertRule:
        if self.by and self.metric not in MONITOR_SPLITTABLE:
            raise ValueError(
                f"by {self.by!r} cannot split {self.metric!r} "
                f"(rule: only {', '.join(sorted(MONITOR_SPLITTABLE))})"
            )
        return self


class DriftSettings(StrictModel):
    """When a feature counts as drifted: an effect size (PSI, normed Wasserstein,
    Jensen-Shannon) at or above its threshold, confirmed by a significant test (KS or
    chi-square p-value below ``p_value``). At large n the tests flag negligible shifts, so the
    effect sizes decide; the p-value only keeps small windows from calling noise drift."""

    window: Duration = Field(
        timedelta(hours=1), description="Sliding window of live traffic compared to the reference."
    )
    min_samples: int = Field(
        100, ge=1, description="Fewer present values in the window: no drift verdict for it."
    )
    psi_threshold: float = Field(0.2, gt=0, description="PSI at or above this is drift.")
    wasserstein_threshold: float = Field(
        0.1, gt=0, description="Wasserstein distance / reference std at or above this is drift."
    )
    js_threshold: float = Field(
        0.1, gt=0, le=1, description="Jensen-Shannon distance (base 2) at or above this is drift."
    )
    p_value: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="A drift verdict also needs the KS (numeric) or chi-square (categorical) "
        "p-value below this: small windows do not flag sampling noise, while at large n every "
        "p-value is tiny and the effect sizes decide.",
    )
    out_of_range_tolerance: float = Field(
        0.0,
        ge=0,
        description="A value counts as out of range beyond [min - t*span, max + t*span] of the "
        "training profile (span = max - min).",
    )


class CanaryPolicy(StrictModel):
    """How a canary advances through its step plan, and when it is rolled back."""

    enabled: bool = Field(True, description="Analyse canaries at all.")
    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        description="Canary traffic percentages, in order; the last is normally 100.",
    )
    min_requests: int = Field(
        100, ge=1, description="Canary requests needed in a step before it can advance."
    )
    min_step_duration: Duration = Field(
        timedelta(minutes=1), description="Time spent at a step before it can advance."
    )
    max_error_rate_delta: float = Field(
        0.02, ge=0, le=1, description="Canary error rate minus stable error rate above this: roll back."
    )
    max_p99_ratio: float = Field(
        1.5, gt=0, description="Canary p99 latency / stable p99 above this: roll back."
    )
    max_drift_psi: float = Field(
        0.25,
        gt=0,
        description="PSI between canary and stable prediction distributions above this: roll back.",
    )
    significance: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="An error-rate regression must also be significant at this level "
        "(one-sided two-proportion z-test).",
    )
    min_stable_requests: int = Field(
        20, ge=0, description="Stable requests needed in the step window for a comparison."
    )
    auto_advance: bool = Field(True, description="Move to the next step when the canary holds.")
    auto_rollback: bool = Field(True, description="Set the canary weight to 0 on regression.")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("steps [] is empty (rule: at least one percentage)")
        for s in v:
            if not 0 < s <= 100:
                raise ValueError(f"step {s!r} is not a percentage (rule: 0 < step <= 100)")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"steps {v!r} are not increasing (rule: strictly increasing)")
        return v


class AlertWebhook(StrictModel):
    """An HTTP endpoint alerts are POSTed to (one JSON alert per request, on firing/resolved)."""

    url: str = Field(description="http(s) URL.")
    min_severity: Severity = Field("warning", description="Only alerts at least this severe.")
    timeout_s: float = Field(5.0, gt=0, le=120, description="Timeout of one delivery attempt.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries after a failed delivery.")
    secret_env: str | None = Field(
        None,
        description="Environment variable (in the monitor's process) with the HMAC-SHA256 "
        "secret that signs the body (X-RayMLP-Signature header).",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"webhook url {v!r} is not an http(s) URL (rule: http://host/...)")
        return v


class ModelMonitorSettings(StrictModel):
    """Per-model monitoring settings."""

    fairness_attribute: str | None = Field(
        None, description="Feature whose values slice the fairness report (e.g. 'contract')."
    )
    positive_label: str | None = Field(
        None,
        description="Label value that counts as the positive class for AUC (default: 1/true, "
        "or the model's second class name).",
    )
    feature_views: list[str] = Field(
        default_factory=list, description="Feature views the model reads (freshness, report)."
    )


class MonitoringConfig(StrictModel):
    """``configs/monitoring/*.yaml``: alert rules, drift thresholds, canary policy.

    Load with :func:`load_monitoring_config`, or name the file in platform.yaml
    (``monitor.config_file``), or apply it at runtime with ``p.monitor.apply_config(path)``.
    """

    rules: list[AlertRule] = Field(default_factory=list, description="Alert rules.")
    drift: DriftSettings = Field(default_factory=DriftSettings, description="Drift verdicts.")
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy, description="Canary analysis.")
    models: dict[str, ModelMonitorSettings] = Field(
        default_factory=dict, description="Per-model settings, by model name."
    )
    freshness: dict[str, Duration] = Field(
        default_factory=dict,
        description="Feature view -> expected max age of its newest event (feeds "
        "feature_freshness_seconds; alert on it with a rule).",
    )
    webhooks: list[AlertWebhook] = Field(
        default_factory=list, description="HTTP endpoints alerts are delivered to."
    )
    deliver_to_registry: bool = Field(
        True, description="Also record alert transitions in the registry's event stream."
    )
    repeat_interval: Duration = Field(
        timedelta(0),
        description="Re-notify a still-firing alert this often (0: only on firing/resolved).",
    )

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, v: list[AlertRule]) -> list[AlertRule]:
        seen: set[str] = set()
        for r in v:
            if r.name in seen:
                raise ValueError(f"rule name {r.name!r} is used twice (rule: unique names)")
            seen.add(r.name)
        return v


def load_monitoring_config(path: str | os.PathLike[str]) -> MonitoringConfig:
    """Load a ``configs/monitoring/*.yaml`` file; a bad file raises one ConfigError.

    Example::

        cfg = load_monitoring_config("configs/monitoring/churn.yaml")
        cfg.canary.steps      # [5.0, 25.0, 50.0, 100.0]
    """
    return load_config_file(MonitoringConfig, path)


# MonitorSettings (above, with the platform settings) refers to MonitoringConfig: complete it.
MonitorSettings.model_rebuild()
PlatformConfig.model_rebuild()

__all__ += [
    "MONITOR_METRICS",
    "AlertRule",
    "DriftSettings",
    "CanaryPolicy",
    "AlertWebhook",
    "ModelMonitorSettings",
    "MonitoringConfig",
    "MonitorSettings",
    "load_monitoring_config",
]


# --- serving config (serving) ---
# ``configs/serve/*.yaml``: the Ray Serve application (``raymlp serve deploy --config FILE``).
# It says what is served and how (batching, autoscaling, cache, breaker, fallback chain). The
# traffic state (canary version + weight, shadow, blue-green standby, step plan) is not here: it
# lives in the registry, so `raymlp serve canary` changes it live without a redeploy.

_SERVE_MODEL_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,127}$")
_SERVE_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9\-]{1,64}$")
#: Operators of a fallback rule condition.
RULE_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "is_null")


def _check_serve_model(value: str) -> str:
    if not _SERVE_MODEL_RE.match(value):
        raise ValueError(
            f"model name {value!r} is not valid (rule: 1-128 chars of a-z, 0-9, '_', '.' or "
            "'-', starting with a letter or digit)"
        )
    return value


class ServeModelRef(StrictModel):
    """A registered model version, or an alias of it (followed live)."""

    name: str = Field(description="Registered model name.")
    version: int | None = Field(None, ge=1, description="A fixed version number.")
    alias: str | None = Field(None, description="An alias, resolved on every registry change.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_serve_model(v)

    @model_validator(mode="after")
    def _one(self) -> ServeModelRef:
        if (self.version is None) == (self.alias is None):
            raise ValueError(
                f"model reference {self.name!r} needs exactly one of version or alias "
                f"(got version={self.version!r}, alias={self.alias!r})"
            )
        return self


class FallbackRule(StrictModel):
    """A rule-based answer, used when no model could answer. The first rule whose conditions
    all hold on the request's features answers.

    Example (YAML)::

        - name: new-and-expensive
          when: {tenure_months: {lt: 6}, monthly_charges: {gt: 80}}
          prediction: churn
          probability: 0.8
    """

    name: str = Field(description="Rule name (reported as model_version 'rule:<name>').")
    when: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Feature -> condition. A condition is a value (equality) or a mapping of operators "
            f"({', '.join(RULE_OPS)}) to operands, all of which must hold. Empty: always."
        ),
    )
    prediction: str = Field(description="The prediction returned (a class name).")
    probability: float | None = Field(
        None, ge=0, le=1, description="The probability returned (positive class)."
    )

    @field_validator("when")
    @classmethod
    def _conditions(cls, v: dict[str, Any]) -> dict[str, Any]:
        for feature, cond in v.items():
            if not isinstance(cond, dict):
                continue
            if not cond:
                raise ValueError(f"when.{feature} = {{}} (rule: at least one operator)")
            for op, operand in cond.items():
                if op not in RULE_OPS:
                    raise ValueError(
                        f"when.{feature}.{op}: unknown operator {op!r} (rule: one of "
                        f"{', '.join(RULE_OPS)})"
                    )
                if op in ("in", "not_in") and not isinstance(operand, list):
                    raise ValueError(f"when.{feature}.{op} = {operand!r} (rule: a list)")
                if op in ("lt", "le", "gt", "ge") and (
                    isinstance(operand, bool) or not isinstance(operand, (int, float))
                ):
                    raise ValueError(f"when.{feature}.{op} = {operand!r} (rule: a number)")
                if op == "is_null" and not isinstance(operand, bool):
                    raise ValueError(f"when.{feature}.is_null = {operand!r} (rule: true|false)")
        return v


class DefaultResponse(StrictModel):
    """The last step of the fallback chain: a constant answer."""

    prediction: str = Field(description="The prediction returned.")
    probability: float | None = Field(None, ge=0, le=1, description="The probability returned.")


class ServedModelConfig(StrictModel):
    """One model the application serves (requests name it as ``model_id``)."""

    name: str = Field(description="Registered model name, e.g. 'customer-churn'.")
    alias: str = Field(
        "production", description="The alias whose holder is the stable (primary) version."
    )
    entity_keys: list[str] = Field(
        default_factory=list,
        description=(
            "Entity join keys (e.g. [customer_id]): accepted in 'entity', used as the sticky "
            "canary routing key, and allowed (and ignored) inside 'features'."
        ),
    )
    features: list[str] | None = Field(
        None,
        description=(
            "Feature references ('view:feature') looked up for entity requests. Default: the "
            "ones recorded in the model artifact (feature_refs)."
        ),
    )
    fallback_model: ServeModelRef | None = Field(
        None,
        description="Fallback model. Default: the fallback named in the stable version's lineage.",
    )
    use_lineage_fallback: bool = Field(
        True, description="Use the lineage's fallback model when fallback_model is not set."
    )
    rules: list[FallbackRule] = Field(
        default_factory=list, description="Rule-based answers after the fallback model."
    )
    default_response: DefaultResponse | None = Field(
        None, description="Constant answer when everything else failed (None: answer 503)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_serve_model(v)

    @field_validator("alias")
    @classmethod
    def _alias(cls, v: str) -> str:
        if not _SERVE_ALIAS_RE.match(v):
            raise ValueError(
                f"alias {v!r} is not valid (rule: 1-63 chars of a-z, 0-9, '_' or '-', starting "
                "with a letter)"
            )
        return v

    @field_validator("features")
    @classmethod
    def _refs(cls, v: list[str] | None) -> list[str] | None:
        for ref in v or []:
            view, sep, feat = ref.partition(":")
            if not sep or not view or not feat:
                raise ValueError(f"feature reference {ref!r} is not 'view:feature'")
        return v

    @field_validator("rules")
    @classmethod
    def _unique_rules(cls, v: list[FallbackRule]) -> list[FallbackRule]:
        names = [r.name for r in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names {dupes!r} repeat (rule: unique)")
        return v


class ServeBatching(StrictModel):
    """``@serve.batch`` of a model server."""

    enabled: bool = Field(True, description="Batch concurrent requests (False: one at a time).")
    max_batch_size: int = Field(32, ge=1, le=4096, description="Most requests in one batch.")
    batch_wait_timeout_s: float = Field(
        0.005, ge=0, le=5, description="Longest wait for a batch to fill after its first request."
    )
    bypass_when_idle: bool = Field(
        True,
        description=(
            "Run a request at once when it is the only one in the replica, instead of waiting "
            "batch_wait_timeout_s for company that is not coming (latency at low load)."
        ),
    )


class ServeAutoscaling(StrictModel):
    """Serve's ``autoscaling_config`` of one deployment."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas (0: scale to zero).")
    max_replicas: int = Field(2, ge=1, description="Most replicas.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at deploy time.")
    target_ongoing_requests: float | None = Field(
        None,
        gt=0,
        description="Ongoing requests per replica the autoscaler aims at (default: the batch size).",
    )
    upscale_delay_s: float = Field(3.0, ge=0, description="Sustained load before scaling up.")
    downscale_delay_s: float = Field(60.0, ge=0, description="Sustained idleness before scaling down.")

    @model_validator(mode="after")
    def _bounds(self) -> ServeAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas} "
                "(rule: min_replicas <= max_replicas)"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas {self.initial_replicas} is outside "
                f"[{self.min_replicas}, {self.max_replicas}] (rule: min <= initial <= max)"
            )
        return self


class ServeDeploymentOptions(StrictModel):
    """Replicas and concurrency of one Serve deployment."""

    num_replicas: int | None = Field(
        None, ge=1, description="A fixed replica count (mutually exclusive with autoscaling)."
    )
    autoscaling: ServeAutoscaling | None = Field(
        None, description="Autoscaling (used when num_replicas is not set; default 1 replica)."
    )
    max_ongoing_requests: int | None = Field(
        None,
        ge=1,
        description=(
            "Requests in flight per replica. Default: sized to the batch (2 x max_batch_size, "
            "at least 16) for model servers, 256 for the gateway. Serve's own default (5) "
            "throttles a batching server to a fraction of its throughput."
        ),
    )
    max_queued_requests: int = Field(
        -1,
        ge=-1,
        description="Requests queued per caller before load is shed with 429 (-1: unbounded).",
    )
    num_cpus: float = Field(0.25, ge=0, description="CPUs reserved per replica.")
    memory_mb: int | None = Field(None, ge=1, description="Memory reserved per replica, MiB.")

    @model_validator(mode="after")
    def _one_scaling(self) -> ServeDeploymentOptions:
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError(
                "num_replicas and autoscaling are both set (rule: a fixed count or autoscaling)"
            )
        return self


class ServeGatewaySettings(ServeDeploymentOptions):
    """The ``Gateway`` ingress deployment."""

    max_inflight: int = Field(
        1024,
        ge=1,
        description="Prediction requests in flight per gateway replica before it answers 429.",
    )
    routing_header: str = Field(
        "X-Routing-Key",
        description="Header whose value, when present, is the sticky canary routing key.",
    )
    refresh_interval_s: float = Field(
        30.0,
        gt=0,
        description="Full re-read of the routing table from the registry (events apply at once).",
    )

    @field_validator("routing_header")
    @classmethod
    def _header(cls, v: str) -> str:
        if not _HEADER_RE.match(v):
            raise ValueError(f"routing_header {v!r} is not a header name (rule: [A-Za-z0-9-]+)")
        return v


class ServeModelServerSettings(ServeDeploymentOptions):
    """A ``ModelServer`` deployment: versions multiplexed by id, batched inference."""

    batching: ServeBatching = Field(default_factory=ServeBatching, description="@serve.batch.")
    max_models_per_replica: int = Field(
        4, ge=1, le=256, description="Versions kept loaded per replica (LRU beyond)."
    )
    variant: Literal["fp32", "int8"] = Field(
        "fp32", description="Weights variant loaded from the artifact."
    )
    torch_threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per replica.")

    def sized_max_ongoing_requests(self) -> int:
        """``max_ongoing_requests``, or the default sized to the batch."""
        if self.max_ongoing_requests is not None:
            return self.max_ongoing_requests
        return max(16, 2 * self.batching.max_batch_size)


class ServeFallbackServerSettings(ServeModelServerSettings):
    """The ``FallbackServer`` deployment: fallback models on replicas of their own, so a dead
    or overloaded primary pool does not take its fallback down with it."""

    enabled: bool = Field(True, description="False: fallback models share the primary pool.")


class ServeCacheSettings(StrictModel):
    """Response cache of the gateway: exact match on (model, resolved version, features)."""

    enabled: bool = Field(True, description="Cache primary and canary answers.")
    max_entries: int = Field(10_000, ge=1, description="Entries per gateway replica (LRU beyond).")
    ttl: Duration = Field(timedelta(seconds=60), description="How long an answer stays valid.")
    entity_requests: bool = Field(
        True,
        description=(
            "Also cache answers to entity requests (keyed by the entity: online features may "
            "change within the TTL)."
        ),
    )


class ServeBreakerSettings(StrictModel):
    """The circuit breaker of every served version."""

    enabled: bool = Field(True, description="Guard each version with a breaker.")
    window_s: float = Field(10.0, gt=0, description="Sliding window the failure rate is taken over.")
    min_calls: int = Field(10, ge=1, description="Calls in the window before the rate counts.")
    failure_rate: float = Field(
        0.5, gt=0, le=1, description="Failure share in the window that opens the breaker."
    )
    consecutive_failures: int = Field(
        5, ge=1, description="Failures in a row that open the breaker regardless of the rate."
    )
    cooldown_s: float = Field(5.0, gt=0, description="Open time before probing (half-open).")
    half_open_calls: int = Field(
        2, ge=1, description="Probe calls let through half-open; all must succeed to close."
    )


class ServeTimeouts(StrictModel):
    """Timeout of each step of the fallback chain."""

    primary_s: float = Field(1.0, gt=0, description="Primary or canary model call.")
    fallback_s: float = Field(0.5, gt=0, description="Fallback model call.")
    warmup_s: float = Field(120.0, gt=0, description="Loading + probing a version before traffic.")


class ServeShadowSettings(StrictModel):
    """Shadow traffic: copies of live requests to a candidate, compared and logged only."""

    sample_percent: float = Field(100.0, ge=0, le=100, description="Share of requests copied.")
    max_inflight: int = Field(
        64, ge=1, description="Shadow calls in flight per gateway; more are skipped, not queued."
    )
    timeout_s: float = Field(2.0, gt=0, description="Timeout of one shadow call.")


class ServePredictionLog(StrictModel):
    """Prediction records sent to the monitor (never on the request's critical path)."""

    enabled: bool = Field(True, description="Log every request and feedback.")
    max_buffer: int = Field(10_000, ge=1, description="Records buffered before new ones are counted as dropped.")
    flush_interval_s: float = Field(1.0, gt=0, description="Longest time a record waits.")


class ServeAppConfig(StrictModel):
    """``configs/serve/*.yaml``: one Serve application (Gateway → ModelServer [+ FallbackServer]).

    Load with :func:`load_serve_config`; deploy with ``raymlp serve deploy --config FILE``.
    """

    name: str = Field("raymlp", description="Serve application name.")
    route_prefix: str = Field("/", description="HTTP route prefix of the application.")
    principal: str | None = Field(
        None,
        description=(
            "Principal (from platform.yaml auth) the application acts as towards the registry, "
            "feature store and monitor. Default: auth.default_principal, else the local admin."
        ),
    )
    http: HTTPConfig | None = Field(
        None, description="HTTP endpoint (host, port, TLS). Default: platform.yaml's http."
    )
    models: list[ServedModelConfig] = Field(min_length=1, description="The served models.")
    gateway: ServeGatewaySettings = Field(
        default_factory=ServeGatewaySettings, description="The ingress deployment."
    )
    model_server: ServeModelServerSettings = Field(
        default_factory=lambda: ServeModelServerSettings(num_cpus=0.5),
        description="The primary model pool.",
    )
    fallback_server: ServeFallbackServerSettings = Field(
        default_factory=lambda: ServeFallbackServerSettings(
            num_cpus=0.1, batching=ServeBatching(max_batch_size=16)
        ),
        description="The fallback model pool.",
    )
    cache: ServeCacheSettings = Field(default_factory=ServeCacheSettings, description="Cache.")
    breaker: ServeBreakerSettings = Field(
        default_factory=ServeBreakerSettings, description="Circuit breakers."
    )
    timeouts: ServeTimeouts = Field(default_factory=ServeTimeouts, description="Step timeouts.")
    shadow: ServeShadowSettings = Field(
        default_factory=ServeShadowSettings, description="Shadow traffic."
    )
    canary_steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        description="Default step plan of `raymlp serve canary` (percentages, increasing).",
    )
    prediction_log: ServePredictionLog = Field(
        default_factory=ServePredictionLog, description="Records sent to the monitor."
    )

    @field_validator("name")
    @classmethod
    def _app_name(cls, v: str) -> str:
        return _check_name(v, "application name")

    @field_validator("route_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/") or (len(v) > 1 and v.endswith("/")) or " " in v:
            raise ValueError(
                f"route_prefix {v!r} is not a path (rule: starts with '/', no trailing '/')"
            )
        return v

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v: list[ServedModelConfig]) -> list[ServedModelConfig]:
        names = [m.name for m in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"models {dupes!r} are listed twice (rule: unique names)")
        return v

    @field_validator("canary_steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < s <= 100 for s in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(
                f"canary_steps {v!r} (rule: non-empty, strictly increasing, each 0 < step <= 100)"
            )
        return v

    def model(self, name: str) -> ServedModelConfig | None:
        """The served model called ``name`` (None if not served)."""
        return next((m for m in self.models if m.name == name), None)


def load_serve_config(path: str | os.PathLike[str]) -> ServeAppConfig:
    """Load a ``configs/serve/*.yaml`` file; a bad file raises one ConfigError naming the field.

    Example::

        cfg = load_serve_config("configs/serve/churn.yaml")
        cfg.model_server.batching.max_batch_size     # 32
    """
    return load_config_file(ServeAppConfig, path)


__all__ += [
    "RULE_OPS",
    "ServeModelRef",
    "FallbackRule",
    "DefaultResponse",
    "ServedModelConfig",
    "ServeBatching",
    "ServeAutoscaling",
    "ServeDeploymentOptions",
    "ServeGatewaySettings",
    "ServeModelServerSettings",
    "ServeFallbackServerSettings",
    "ServeCacheSettings",
    "ServeBreakerSettings",
    "ServeTimeouts",
    "ServeShadowSettings",
    "ServePredictionLog",
    "ServeAppConfig",
    "load_serve_config",
]


# --- inference jobs config (inference) ---


class PredictionModelRef(StrictModel):
    """Which registered model version scores: a pinned ``version``, else the ``alias`` holder."""

    name: str = Field(description="Registered model name, e.g. 'customer-churn'.")
    alias: str | None = Field(
        "production", description="Alias whose holder scores (ignored when version is set)."
    )
    version: int | None = Field(
        None, ge=1, description="Pin this version number (wins over alias)."
    )
    variant: Literal["fp32", "int8"] = Field(
        "fp32", description="Weights variant: fp32, or int8 (dynamic-quantized, CPU only)."
    )

    @field_validator("name")
    @classmethod
    def _model_name(cls, v: str) -> str:
        return _check_name(v, "model name")

    @model_validator(mode="after")
    def _alias_or_version(self) -> PredictionModelRef:
        if self.version is None and not self.alias:
            raise ValueError("model: neither alias nor version is set (rule: one of them)")
        return self


def _check_columns(v: list[str], what: str) -> list[str]:
    seen: set[str] = set()
    for c in v:
        if not c or not isinstance(c, str):
            raise ValueError(f"{what} {c!r} is not a column name (rule: non-empty strings)")
        if c in seen:
            raise ValueError(f"{what} {c!r} is listed twice (rule: unique columns)")
        seen.add(c)
    return v


def _check_refs(v: list[str] | None) -> list[str] | None:
    if v is None:
        return v
    if not v:
        raise ValueError("features [] is empty (rule: omit it, or list 'view:feature' refs)")
    for ref in v:
        view, sep, feat = str(ref).partition(":")
        if not sep or not view or not feat:
            raise ValueError(f"feature ref {ref!r} is not 'view:feature'")
    return v


class BatchPredictJobConfig(StrictModel):
    """``python -m jobs.batch_predict --config ...``: score an entity table, write a Delta table.

    Ray Data reads the entity table, joins features (point-in-time, or the latest values),
    scores with a pool of predictor actors and appends the predictions to
    ``<root>/predictions/<output>`` with the model version and the lineage of the run.
    """

    entity_table: str = Field(
        description="Entities to score: Parquet/CSV file or directory, or a Delta table (path/URI)."
    )
    entity_table_version: int | None = Field(
        None, ge=0, description="Delta version of entity_table to read (default: the latest)."
    )
    entity_keys: list[str] = Field(
        description="Join key columns of the entity table (kept in the output), e.g. [customer_id]."
    )
    timestamp_column: str = Field(
        "event_timestamp",
        description="Entity timestamp column: the as-of time of each row's point-in-time join.",
    )
    feature_mode: Literal["point_in_time", "latest"] = Field(
        "point_in_time",
        description=(
            "point_in_time: features as of each row's timestamp_column; latest: the newest "
            "values (within each view's TTL) as of 'as_of' (default: the run time)."
        ),
    )
    features: list[str] | None = Field(
        None,
        description="Feature refs 'view:feature' to join (default: the model's recorded refs).",
    )
    as_of_versions: dict[str, int] | None = Field(
        None,
        description="Pin feature tables {view: Delta version} (default: the current versions).",
    )
    as_of: str | None = Field(
        None, description="feature_mode latest: the as-of time (ISO 8601; default: now)."
    )
    model: PredictionModelRef = Field(description="The model version that scores.")
    output: str = Field(description="Predictions table name: <root>/predictions/<output>.")
    passthrough_columns: list[str] = Field(
        default_factory=list,
        description="Other entity table columns copied to the output (keys and timestamp are).",
    )
    include_features: bool = Field(
        False, description="Also write the joined feature values next to each prediction."
    )
    batch_size: int = Field(1024, ge=1, le=1_000_000, description="Rows per predictor call.")
    concurrency: int | tuple[int, int] = Field(
        2, description="Predictor actors: a fixed pool size, or [min, max] to autoscale."
    )
    num_cpus: float = Field(1.0, gt=0, le=64, description="CPUs per predictor actor.")
    use_gpu: bool = Field(
        False, description="One GPU share per actor when the cluster has GPUs (else CPU)."
    )
    num_gpus: float = Field(1.0, gt=0, le=8, description="GPUs per predictor actor (use_gpu).")
    rows_per_file: int = Field(
        250_000, ge=1, description="Target rows per Parquet file of the output table."
    )

    @field_validator("entity_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("entity_keys [] is empty (rule: at least one join key)")
        return _check_columns(v, "entity key")

    @field_validator("passthrough_columns")
    @classmethod
    def _passthrough(cls, v: list[str]) -> list[str]:
        return _check_columns(v, "passthrough column")

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[str] | None) -> list[str] | None:
        return _check_refs(v)

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        return _check_name(v, "output table")

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        lo, hi = (v, v) if isinstance(v, int) else v
        if lo < 1 or hi < lo:
            raise ValueError(
                f"concurrency {v!r} (rule: a pool size >= 1, or [min, max] with 1 <= min <= max)"
            )
        return v

    @field_validator("as_of")
    @classmethod
    def _as_of(cls, v: str | None) -> str | None:
        if v is not None:
            from datetime import datetime

            try:
                datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(f"as_of {v!r} is not an ISO-8601 time") from None
        return v

    @model_validator(mode="after")
    def _mode_fields(self) -> BatchPredictJobConfig:
        if self.as_of is not None and self.feature_mode != "latest":
            raise ValueError(
                f"as_of {self.as_of!r} is only used with feature_mode latest "
                f"(got {self.feature_mode!r})"
            )
        return self


class StreamSourceConfig(StrictModel):
    """Where events come from: new versions of a Delta table, or an adapter class."""

    kind: Literal["delta", "adapter"] = Field(
        "delta", description="delta: tail a Delta table's new commits; adapter: a custom class."
    )
    path: str | None = Field(
        None, description="kind delta: the events table (path/URI; relative to cwd)."
    )
    start_version: int | None = Field(
        None,
        ge=0,
        description=(
            "kind delta, first start only: the first table version to read (default: the "
            "table's first version, i.e. every event)."
        ),
    )
    adapter: str | None = Field(
        None,
        description=(
            "kind adapter: 'module:Class' of a raymlp.inference.sources.EventSource subclass."
        ),
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="kind adapter: keyword arguments of the class."
    )
    max_records: int = Field(
        10_000, ge=1, description="At most this many events per micro-batch (one commit each)."
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> StreamSourceConfig:
        if self.kind == "delta" and not self.path:
            raise ValueError("source.path is required for kind delta (rule: the events table)")
        if self.kind == "adapter":
            if not self.adapter or ":" not in self.adapter:
                raise ValueError(
                    f"source.adapter {self.adapter!r} (rule: 'module:Class' for kind adapter)"
                )
        return self


class StreamScoringConfig(StrictModel):
    """How each event is scored."""

    mode: Literal["auto", "serve", "local"] = Field(
        "auto",
        description=(
            "serve: through the Serve application's handle (routing, canary, fallbacks, "
            "prediction log); local: a predictor in this process; auto: serve when the app "
            "is deployed, else local."
        ),
    )
    app: str | None = Field(
        None, description="Serve application name (default: the one deployed with raymlp)."
    )
    request: Literal["entity", "features"] = Field(
        "entity",
        description=(
            "entity: score by entity keys (features read from the online store after the "
            "push); features: send the event's own columns as the model inputs."
        ),
    )
    max_inflight: int = Field(
        64, ge=1, le=10_000, description="Serve mode: concurrent requests in flight."
    )
    timeout_s: float = Field(60.0, gt=0, description="Serve mode: timeout of one micro-batch.")


class StreamPredictJobConfig(StrictModel):
    """``python -m jobs.stream_predict --config ...``: the event-driven scoring loop.

    Tails ``source``, pushes each micro-batch to the ``push_views`` (online + offline store),
    scores every event and appends the results to ``<root>/predictions/<output>``; the source
    offset is committed in the same Delta commit, so a restart neither loses nor repeats output.
    """

    name: str = Field(
        description="Stream name: its identity in the output table (offsets), and in logs."
    )
    source: StreamSourceConfig = Field(description="The events source.")
    entity_keys: list[str] = Field(description="Join key columns of each event.")
    event_id_column: str | None = Field(
        None,
        description=(
            "Column with a unique event id (default: the source's own id, e.g. Delta "
            "'<version>:<file>:<row>')."
        ),
    )
    timestamp_column: str | None = Field(
        "event_timestamp", description="Event time column copied to the output (None: none)."
    )
    push_views: list[str] = Field(
        default_factory=list,
        description="Feature views each batch is pushed to before scoring (fresh features).",
    )
    model: PredictionModelRef = Field(description="The model that scores.")
    features: list[str] | None = Field(
        None,
        description="Local scoring: feature refs read online (default: the model's recorded refs).",
    )
    scoring: StreamScoringConfig = Field(
        default_factory=StreamScoringConfig, description="How events are scored."
    )
    output: str | None = Field(
        None, description="Predictions table name: <root>/predictions/<output> (default: name)."
    )
    passthrough_columns: list[str] = Field(
        default_factory=list, description="Other event columns copied to the output."
    )
    poll_interval: Duration = Field("1s", description="Wait between polls when idle.")
    max_retries: int = Field(
        3, ge=0, le=100, description="Retries of a failing micro-batch before the job fails."
    )

    @field_validator("name")
    @classmethod
    def _stream_name(cls, v: str) -> str:
        return _check_name(v, "stream name")

    @field_validator("output")
    @classmethod
    def _output(cls, v: str | None) -> str | None:
        return v if v is None else _check_name(v, "output table")

    @field_validator("entity_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("entity_keys [] is empty (rule: at least one join key)")
        return _check_columns(v, "entity key")

    @field_validator("passthrough_columns", "push_views")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return _check_columns(v, "entry")

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[str] | None) -> list[str] | None:
        return _check_refs(v)

    @property
    def output_table(self) -> str:
        """The predictions table name (``output``, else the stream name)."""
        return self.output or self.name


__all__ += [
    "PredictionModelRef",
    "BatchPredictJobConfig",
    "StreamSourceConfig",
    "StreamScoringConfig",
    "StreamPredictJobConfig",
]
