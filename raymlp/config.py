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
    "load_yaml",
    "load_config",
    "load_platform_config",
    "format_validation_error",
]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


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


class RegistrySettings(StrictModel):
    """The registry actor."""

    actor: ActorOptions = Field(default_factory=ActorOptions, description="Ray options.")
    approval_required: bool = Field(
        True, description="Whether promotion to the 'production' alias needs an approval."
    )
    approval_overrides: dict[str, bool] = Field(
        default_factory=dict, description="Per-model override of approval_required."
    )


class MonitorSettings(StrictModel):
    """The monitor actor."""

    actor: ActorOptions = Field(default_factory=ActorOptions, description="Ray options.")


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
