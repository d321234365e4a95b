"""``configs/train/*.yaml``: what ``raymlp train`` / ``python -m jobs.train`` runs (dataset →
Tune × Train + DeepSpeed → registry). Owned by the training package (raymlp/training/); see
docs/training.md for the full reference.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from raymlp.config._base import (
    IMPORT_PATH_RE,
    KindModel,
    StrictModel,
    _check_name,
    kind_union,
    load_config_file,
)

__all__ = [
    "TRAIN_OPTIMIZERS",
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
    "LogisticFallbackSettings",
    "DistilledFallbackSettings",
    "AnyFallbackSettings",
    "QuantizeSettings",
    "PromotionSettings",
    "RegistryTarget",
    "TrainConfig",
    "load_train_config",
]

TRAIN_OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
_SEARCH_KINDS = ("choice", "uniform", "loguniform", "randint")
# Search-space keys are dotted paths into TrainConfig; only these sections may be tuned (the data,
# the resources and the registry target stay fixed across trials so trials are comparable).
_TUNABLE_PREFIXES = ("optimizer.", "model.kwargs.", "training.", "deepspeed.")
_FEATURE_REF_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*:[A-Za-z_][A-Za-z0-9_]*$")


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
        if not IMPORT_PATH_RE.match(v):
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

    engine: Literal["auto", "deepspeed", "ddp"] = Field(
        "auto",
        description=(
            "Training engine: 'deepspeed' (ZeRO), 'ddp' (torch DistributedDataParallel and a "
            "torch optimizer), 'auto' = DDP for models up to 20M parameters without offload, "
            "ZeRO-3 or 'extra' keys (ZeRO brings nothing there and costs per step), DeepSpeed "
            "otherwise."
        ),
    )
    zero_stage: int = Field(2, description="ZeRO stage: 0 (off), 1, 2 or 3 (engine deepspeed).")
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
        if self.engine == "ddp" and (
            self.zero_stage == 3 or self.offload_optimizer or self.offload_params or self.extra
        ):
            raise ValueError(
                "engine 'ddp' has no ZeRO-3, offload or raw DeepSpeed keys (rule: use engine "
                f"'deepspeed' or 'auto' for them; got zero_stage {self.zero_stage}, "
                f"offload_optimizer {self.offload_optimizer}, offload_params "
                f"{self.offload_params}, extra {sorted(self.extra)})"
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


class FallbackSettings(KindModel):
    """The small model served when the primary fails: trained on the same split, registered
    with the primary and named in its lineage. One model per ``kind``:
    :class:`LogisticFallbackSettings` (the default) and :class:`DistilledFallbackSettings`."""

    enabled: bool = Field(True, description="Train and register a fallback model.")
    kind: str = Field(
        "logistic_regression",
        description="logistic_regression on the labels, or distilled_mlp: a small MLP distilled "
        "from the primary.",
    )
    model_name: str | None = Field(
        None,
        description="Registry name of the fallback (default: '<registry.model_name>-fallback').",
    )
    epochs: int = Field(5, ge=1, description="Passes over the train split.")
    lr: float = Field(0.05, gt=0, description="Adam learning rate.")
    batch_size: int = Field(256, ge=1, description="Mini-batch size.")


class LogisticFallbackSettings(FallbackSettings):
    """``kind: logistic_regression``: logistic regression on the labels."""

    kind: Literal["logistic_regression"] = Field(
        "logistic_regression", description="logistic_regression."
    )


class DistilledFallbackSettings(FallbackSettings):
    """``kind: distilled_mlp``: a small MLP trained on the labels and the primary's scores."""

    kind: Literal["distilled_mlp"] = Field(description="distilled_mlp.")
    hidden_dims: list[int] = Field(
        default_factory=lambda: [16], description="Hidden layers of the distilled student."
    )


#: The ``fallback`` section's type: one model per kind. Type checkers see the base class (the
#: discriminated union is built at runtime); code narrows with ``isinstance`` or ``kind``.
if TYPE_CHECKING:
    AnyFallbackSettings = FallbackSettings
else:
    AnyFallbackSettings = kind_union(
        FallbackSettings,
        {
            "logistic_regression": LogisticFallbackSettings,
            "distilled_mlp": DistilledFallbackSettings,
        },
        default="logistic_regression",
    )


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
    fallback: AnyFallbackSettings = Field(
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
