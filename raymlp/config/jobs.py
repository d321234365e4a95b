"""Job configs (``configs/jobs/*.yaml``): ingest, materialize, batch and stream prediction.

Each is the ``--config`` of one ``python -m jobs.<name>`` entrypoint.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from raymlp.config._base import Duration, KindModel, StrictModel, _check_name, kind_union

__all__ = [
    "IngestSource",
    "IngestJobConfig",
    "MaterializeJobConfig",
    "PredictionModelRef",
    "BatchPredictJobConfig",
    "StreamSourceConfig",
    "DeltaSourceConfig",
    "AdapterSourceConfig",
    "AnyStreamSource",
    "StreamScoringConfig",
    "StreamPredictJobConfig",
]


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


# --- prediction jobs (raymlp.inference) ---


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
    warm_pool: bool = Field(
        True,
        description="Score on the driver's warm predictor pool for the model (kept loaded for "
        "the next run of this driver; idle actors hold no CPU) instead of a Ray Data actor "
        "pool started and stopped with the run.",
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


class StreamSourceConfig(KindModel):
    """Where events come from, one model per ``kind``: :class:`DeltaSourceConfig` (new versions
    of a Delta table; the default) or :class:`AdapterSourceConfig` (a custom class)."""

    kind: str = Field(
        "delta", description="delta: tail a Delta table's new commits; adapter: a custom class."
    )
    max_records: int = Field(
        10_000, ge=1, description="At most this many events per micro-batch (one commit each)."
    )


class DeltaSourceConfig(StreamSourceConfig):
    """``kind: delta``: tail the new commits of a Delta table."""

    kind: Literal["delta"] = Field("delta", description="delta.")
    path: str | None = Field(None, description="The events table (path/URI; relative to cwd).")
    start_version: int | None = Field(
        None,
        ge=0,
        description=(
            "First start only: the first table version to read (default: the table's first "
            "version, i.e. every event)."
        ),
    )

    @model_validator(mode="after")
    def _path(self) -> DeltaSourceConfig:
        if not self.path:
            raise ValueError("source.path is required for kind delta (rule: the events table)")
        return self


class AdapterSourceConfig(StreamSourceConfig):
    """``kind: adapter``: a :class:`raymlp.inference.sources.EventSource` subclass."""

    kind: Literal["adapter"] = Field(description="adapter.")
    adapter: str | None = Field(
        None, description="'module:Class' of a raymlp.inference.sources.EventSource subclass."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the class."
    )

    @model_validator(mode="after")
    def _adapter(self) -> AdapterSourceConfig:
        if not self.adapter or ":" not in self.adapter:
            raise ValueError(
                f"source.adapter {self.adapter!r} (rule: 'module:Class' for kind adapter)"
            )
        return self


#: The ``source`` section's type: one model per kind. Type checkers see the base class (the
#: discriminated union is built at runtime); code narrows with ``isinstance``.
if TYPE_CHECKING:
    AnyStreamSource = StreamSourceConfig
else:
    AnyStreamSource = kind_union(
        StreamSourceConfig,
        {"delta": DeltaSourceConfig, "adapter": AdapterSourceConfig},
        default="delta",
    )


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
    source: AnyStreamSource = Field(description="The events source.")
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
    poll_interval: Duration = Field(
        timedelta(seconds=1), description="Wait between polls when idle."
    )
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
