"""``configs/serve/*.yaml``: the Ray Serve application (``raymlp serve deploy --config FILE``).

It says what is served and how (batching, autoscaling, cache, breaker, fallback chain). The
traffic state (canary version + weight, shadow, blue-green standby, step plan) is not here: it
lives in the registry, so ``raymlp serve canary`` changes it live without a redeploy.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from raymlp.config._base import (
    ALIAS_RE,
    MODEL_NAME_RE,
    Duration,
    StrictModel,
    _check_name,
    load_config_file,
)
from raymlp.config.platform import HTTPConfig

__all__ = [
    "RULE_OPS",
    "ServeModelRef",
    "FallbackRule",
    "DefaultResponse",
    "ServedModelConfig",
    "ServeBatching",
    "ServeAutoscaling",
    "ServeDeploymentOptions",
    "ServeRates",
    "ServeRateLimit",
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

_HEADER_RE = re.compile(r"^[A-Za-z0-9\-]{1,64}$")
#: Operators of a fallback rule condition.
RULE_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "is_null")


def _check_serve_model(value: str) -> str:
    if not MODEL_NAME_RE.match(value):
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
        if not ALIAS_RE.match(v):
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
    downscale_delay_s: float = Field(
        60.0, ge=0, description="Sustained idleness before scaling down."
    )

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


class ServeRates(StrictModel):
    """Token-bucket rates of one tenant: sustained rates and bucket sizes (bursts)."""

    requests_per_s: float = Field(
        100.0, gt=0, description="Sustained HTTP requests per second per tenant."
    )
    requests_burst: float = Field(
        200.0, ge=1, description="Requests a tenant may send at once (bucket size)."
    )
    instances_per_s: float = Field(
        2000.0,
        gt=0,
        description="Sustained instances per second per tenant (a batch of n counts n).",
    )
    instances_burst: float = Field(
        4000.0,
        ge=1,
        description="Instances a tenant may send at once (at least the largest batch allowed).",
    )


class ServeRateLimit(ServeRates):
    """Per-tenant rate limits of the gateway (token buckets, one pair per tenant and gateway
    replica): a request beyond them answers 429 with ``Retry-After``. Off by default; the rates
    here apply to every tenant not listed in ``tenants``.

    Example (YAML)::

        rate_limit:
          enabled: true
          requests_per_s: 50
          tenants: {globex: {requests_per_s: 5, requests_burst: 10}}
    """

    enabled: bool = Field(False, description="Enforce the limits.")
    tenants: dict[str, ServeRates] = Field(
        default_factory=dict, description="Tenant name -> its own rates (instead of these)."
    )

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, v: dict[str, ServeRates]) -> dict[str, ServeRates]:
        for name in v:
            _check_name(name, "tenant name")
        return v

    def rates(self, tenant: str | None) -> ServeRates:
        """The rates of ``tenant`` (its own, else the defaults)."""
        return self.tenants.get(tenant or "", self)


class ServeGatewaySettings(ServeDeploymentOptions):
    """The ``Gateway`` ingress deployment."""

    max_inflight: int = Field(
        1024,
        ge=1,
        description="Instances (a single prediction counts 1, a batch its size) in flight per "
        "gateway replica before it answers 429.",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request body accepted, bytes; a larger one answers 413.",
    )
    max_instances_per_request: int = Field(
        1000,
        ge=1,
        le=10_000,
        description="Most instances in one POST /v1/predictions:batch; more answers 422.",
    )
    rate_limit: ServeRateLimit = Field(
        default_factory=ServeRateLimit, description="Per-tenant rate limits (off by default)."
    )
    feedback_window: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="Request ids per gateway replica that accept feedback (the most recent "
        "answered ones); feedback for an older or unknown id answers 404.",
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

    @model_validator(mode="after")
    def _burst_fits_a_batch(self) -> ServeGatewaySettings:
        rl = self.rate_limit
        if not rl.enabled:
            return self
        for where, rates in [("rate_limit", rl)] + [
            (f"rate_limit.tenants.{t}", r) for t, r in rl.tenants.items()
        ]:
            if rates.instances_burst < self.max_instances_per_request:
                raise ValueError(
                    f"{where}.instances_burst {rates.instances_burst!r} is below "
                    f"max_instances_per_request {self.max_instances_per_request!r} (rule: the "
                    "bucket must hold the largest batch allowed, or that batch could never pass)"
                )
        return self


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
    window_s: float = Field(
        10.0, gt=0, description="Sliding window the failure rate is taken over."
    )
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
    pin_warmup_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Loading a cold version a request pins (``version``) on the request's own time: "
            "beyond it the request answers 503 ``unavailable``, never a hang."
        ),
    )


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
    max_buffer: int = Field(
        10_000, ge=1, description="Records buffered before new ones are counted as dropped."
    )
    flush_interval_s: float = Field(1.0, gt=0, description="Longest time a record waits.")
    spool: bool = Field(
        True,
        description=(
            "Also write each record to a node-local spool until it is shipped, so the records "
            "of a killed gateway replica are shipped by another one on the node (the monitor "
            "de-duplicates by request id). False: memory only (a kill loses up to "
            "flush_interval_s of records)."
        ),
    )
    spool_dir: str | None = Field(
        None,
        description=(
            "Spool directory (node-local). Default: $RAYMLP_SPOOL_DIR, else "
            "<tmp>/raymlp-spool-<uid>; one subdirectory per platform (storage root + namespace)."
        ),
    )


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
