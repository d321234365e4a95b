"""The training job end to end: features → split → Tune × Train + DeepSpeed → artifacts →
registry → promotion gate. ``jobs/train.py`` and ``raymlp train`` call :func:`run_training_job`.

Steps (each printed as it starts):

1. **run**: a parent run in the registry (params, the whole config, git commit).
2. **data**: the labelled entity table, joined point-in-time with the feature refs at pinned
   Delta versions (``as_of_versions``, else the current ones — recorded in lineage); feature
   columns ``view__feature`` are renamed to their short names when unambiguous (the
   ``view__feature`` names stay accepted as aliases at serving time); split by entity,
   preprocessing fitted on train.
3. **train**: one ``TorchTrainer`` run, or a Ray Tune search (every trial a child run).
4. **evaluate**: the best checkpoint becomes an artifact, loaded back with ``load_predictor``
   and scored on the test split (the serving code path); optional INT8 variant with its deltas.
5. **fallback**: trained on the same split (a Ray task), evaluated, registered first.
6. **register**: the primary with signature, metrics, reference profile, card and lineage
   (run, feature views @ versions, rows, entity table, commit, fallback model).
7. **gate**: the current holder of ``promotion.alias`` is scored on the same test split; only a
   win by ``promotion.margin`` leads to a promotion *request* (or a direct move where the
   registry needs no approval for that alias). Approvals are never bypassed.

Example::

    import raymlp
    from raymlp.config import load_train_config
    from raymlp.training.pipeline import run_training_job

    result = run_training_job(raymlp.connect(), load_train_config("configs/train/churn.yaml"))
    print(result.version, result.test_metrics["auc"], result.gate["reason"])
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raymlp._private.git import detect_git_commit
from raymlp.errors import ConfigError, NotFoundError
from raymlp.predictor.preprocessing import short_feature_names
from raymlp.registry.artifacts import factory_allowed
from raymlp.training.data import PreparedData, prepare_data, read_table
from raymlp.training.publish import Publication, metrics_for_registry, publish
from raymlp.training.trainer import BestCheckpoint, find_best_checkpoint, join_uri, make_trainer
from raymlp.training.tuning import TRIALS_DIR, apply_overrides, keep_signal_handlers, run_tune

__all__ = [
    "run_training_job",
    "load_job_config",
    "TrainJobResult",
    "load_training_data",
    "signature_for",
]

log = logging.getLogger(__name__)


@dataclass
class TrainJobResult:
    """What the job did (also printed as JSON by the CLI)."""

    model_name: str
    version: int
    run_id: str
    artifact_uri: str
    test_metrics: dict[str, Any]
    best_params: dict[str, Any]
    fallback_name: str | None = None
    fallback_version: int | None = None
    fallback_metrics: dict[str, Any] | None = None
    int8: dict[str, Any] | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    promotion: dict[str, Any] | None = None
    feature_versions: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for m in (d["test_metrics"], d["fallback_metrics"] or {}):
            m.pop("calibration", None)
        return d

    def summary(self) -> str:
        """The few lines ``raymlp train`` and ``jobs.train`` print (without ``--json``)."""
        m = self.test_metrics
        lines = [
            f"model      {self.model_name} v{self.version}  ({self.artifact_uri})",
            f"test       auc {m['auc']:.4f}  accuracy {m['accuracy']:.4f}  log_loss "
            f"{m['log_loss']:.4f}  brier {m['brier']:.4f}  ece {m['ece']:.4f}",
        ]
        if self.fallback_version is not None:
            fb = self.fallback_metrics or {}  # set together with fallback_version
            lines.append(
                f"fallback   {self.fallback_name} v{self.fallback_version}  (test auc "
                f"{fb['auc']:.4f})"
            )
        if self.int8:
            lines.append(f"int8       test auc delta {self.int8['auc_delta']:+.4f}")
        lines.append(f"gate       {self.gate.get('reason')}")
        if self.promotion:
            lines.append(f"promotion  {self.promotion}")
        lines.append(f"run        {self.run_id}")
        return "\n".join(lines)


def load_job_config(path: str, overrides: dict[str, Any] | None = None) -> Any:
    """The training config of ``path`` with ``--set`` overrides applied, validated — before
    anything touches the cluster."""
    from raymlp.config import load_train_config

    cfg = load_train_config(path)
    if overrides:
        cfg = apply_overrides(cfg, overrides, source=f"{path} --set")
    return cfg


def _flat_params(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    data = cfg.model_dump(mode="json")
    for section in ("model", "optimizer", "training", "deepspeed", "scaling"):
        for k, v in data[section].items():
            out[f"{section}.{k}"] = v
    out["dataset.entity_table"] = cfg.dataset.entity_table
    out["dataset.features"] = ",".join(cfg.dataset.features)
    out["dataset.columns"] = ",".join(cfg.dataset.columns)
    out["tune.num_samples"] = cfg.tune.num_samples
    out["tune.metric"] = cfg.tune.metric
    return out


def load_training_data(
    platform: Any, cfg: Any
) -> tuple[Any, list[str], dict[str, str], dict[str, Any], dict[str, Any]]:
    """The joined dataset, the input column names, aliases ``{view__feature: short}``, the
    feature Delta versions read, and the entity-table info."""
    ds, info = read_table(cfg.dataset.entity_table, cfg.dataset.entity_table_version)
    versions: dict[str, Any] = {}
    renames: dict[str, str] = {}
    inputs = list(cfg.dataset.columns)
    if cfg.dataset.features:
        views = sorted({ref.split(":", 1)[0] for ref in cfg.dataset.features})
        pins = dict(cfg.dataset.as_of_versions or {})
        missing = [v for v in views if v not in pins]
        if missing:
            current = platform.features.table_versions(missing)
            pins.update({v: current.get(v) for v in missing if current.get(v) is not None})
        ds = platform.features.get_historical_features(
            ds,
            list(cfg.dataset.features),
            as_of_versions=pins,
            timestamp_field=cfg.dataset.timestamp_column,
        )
        versions = dict(getattr(ds, "feature_versions", None) or pins)
        full = [ref.replace(":", "__", 1) for ref in cfg.dataset.features]
        taken = {
            *cfg.dataset.entity_keys,
            cfg.dataset.timestamp_column,
            cfg.dataset.label_column,
            *cfg.dataset.columns,
        }
        renames = {f: s for f, s in short_feature_names(full).items() if s not in taken}
        if renames:
            ds = ds.rename_columns(renames)
        inputs = [renames.get(f, f) for f in full] + inputs
    return ds, inputs, renames, versions, info


def signature_for(prepared: PreparedData, cfg: Any, refs: dict[str, str]) -> dict[str, Any]:
    """The registry signature: raw inputs (nullable: missing values are imputed) + output."""
    return {
        "inputs": [
            {**i, "nullable": True, "description": refs.get(i["name"], "entity table column")}
            for i in prepared.preprocessor.signature_inputs()
        ],
        "output": {
            "name": cfg.dataset.label_column,
            "kind": "binary",
            "labels": list(cfg.dataset.class_names),
        },
    }


def _registry_callbacks(platform: Any, cfg: Any, experiment: str, parent_run_id: str) -> list[Any]:
    """The registry's Tune callback: one child run per trial under the job's run."""
    from raymlp.training.tune_callback import RegistryTuneCallback

    return [
        RegistryTuneCallback(
            platform,
            experiment,
            parent_run_id=parent_run_id,
            metric=cfg.tune.metric,
            mode=cfg.tune.mode,
        )
    ]


def _log_trials_post_hoc(
    reg: Any,
    experiment: str,
    parent: str,
    trials: list[dict[str, Any]],
    trials_uri: str,
    metric: str,
    mode: str,
) -> None:
    """Without the registry's Tune callback, record each trial as a child run afterwards."""
    for t in trials:
        if not t.get("trial_id"):
            continue
        run = reg.start_run(
            experiment,
            params=t["params"],
            parent_run_id=parent,
            tags={"trial_id": t["trial_id"]},
            name=t["trial_id"],
        )
        try:
            best = find_best_checkpoint(join_uri(trials_uri, t["trial_id"]), metric, mode)
            for h in best.history:
                reg.log_metrics(
                    run,
                    {k: v for k, v in h.items() if isinstance(v, int | float)},
                    step=int(h["epoch"]),
                )
        except NotFoundError:
            pass
        reg.end_run(run, "FAILED" if t.get("error") else "FINISHED")


def _train(
    platform: Any,
    cfg: Any,
    prepared: PreparedData,
    run_name: str,
    experiment: str,
    parent: str,
    say: Callable[[str], None],
) -> tuple[BestCheckpoint, dict[str, Any], list[dict[str, Any]]]:
    storage_path = platform.storage.uri("training")
    for ds in prepared.tensors.values():
        ds.context.enable_progress_bars = False  # one bar per epoch per worker is noise
    if cfg.tune.enabled:
        callbacks = _registry_callbacks(platform, cfg, experiment, parent)
        say(
            f"tune: {cfg.tune.num_samples} trials x {cfg.scaling.num_workers} workers "
            f"(engine {cfg.deepspeed.engine}, ZeRO-{cfg.deepspeed.zero_stage}), metric {cfg.tune.metric}"
        )
        outcome = run_tune(
            cfg,
            prepared.tensors,
            prepared.input_dim,
            storage_path=storage_path,
            run_name=run_name,
            callbacks=callbacks,
        )
        if not callbacks:
            _log_trials_post_hoc(
                platform.registry,
                experiment,
                parent,
                outcome.trials,
                join_uri(storage_path, run_name, TRIALS_DIR),
                cfg.tune.metric,
                cfg.tune.mode,
            )
        return outcome.best, outcome.best_params, outcome.trials
    say(
        f"train: {cfg.scaling.num_workers} workers (engine {cfg.deepspeed.engine}, ZeRO-{cfg.deepspeed.zero_stage}), "
        f"{cfg.training.epochs} epochs"
    )
    trainer = make_trainer(
        cfg, prepared.tensors, prepared.input_dim, storage_path=storage_path, name=run_name
    )
    with keep_signal_handlers():
        trainer.fit()
    best = find_best_checkpoint(join_uri(storage_path, run_name), cfg.tune.metric, cfg.tune.mode)
    return best, {}, []


def factory_modules(platform: Any) -> list[str] | None:
    """The platform's ``registry.model_factory_modules`` (None: the default allow-list)."""
    registry = getattr(getattr(platform, "config", None), "registry", None)
    return list(registry.model_factory_modules) if registry is not None else None


def check_factory_allowed(platform: Any, cfg: Any) -> None:
    """Fail before training when the configured factory could never be registered or served
    (``registry.model_factory_modules``), rather than after an hour of training."""
    modules = factory_modules(platform)
    if modules is not None and not factory_allowed(cfg.model.factory, modules):
        raise ConfigError(
            f"model.factory {cfg.model.factory!r} is not in an allowed module (rule: "
            f"registry.model_factory_modules = {modules}; add its package to the platform "
            "config)",
            field="model.factory",
            value=cfg.model.factory,
            rule="model_factory_modules",
        )


def run_training_job(
    platform: Any,
    cfg: Any,
    *,
    say: Callable[[str], None] | None = None,
    run_name: str | None = None,
) -> TrainJobResult:
    """Run the whole job (see the module docstring); returns what it registered and decided.

    Raises:
        ValidationError / SchemaError / ConfigError: bad data or config (names the field);
            the parent run is ended FAILED and nothing is registered.
    """
    say = say or (lambda msg: print(f"[raymlp train] {msg}", flush=True))
    check_factory_allowed(platform, cfg)
    t_start = time.monotonic()
    reg = platform.registry
    name = cfg.registry.model_name
    experiment = cfg.registry.experiment or name
    run_name = run_name or f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    parent = reg.start_run(
        experiment,
        params=_flat_params(cfg),
        config=cfg.model_dump(mode="json"),
        tags={"job": "train", "model": name, **cfg.registry.tags},
        name=run_name,
    )
    say(f"run {parent} ({experiment}/{run_name})")
    try:
        result = _run(platform, cfg, parent, run_name, experiment, say)
    except BaseException:
        try:
            reg.end_run(parent, "FAILED")
        except Exception as e:  # never hide the real failure behind a tracking one
            log.warning("could not mark run %s FAILED: %s", parent, e)
        raise
    reg.end_run(parent, "FINISHED")
    result.duration_s = round(time.monotonic() - t_start, 1)
    say(
        f"done in {result.duration_s:.0f}s: {name} v{result.version} (test auc "
        f"{result.test_metrics.get('auc', float('nan')):.4f}); gate: {result.gate.get('reason')}"
    )
    return result


def _run(
    platform: Any, cfg: Any, parent: str, run_name: str, experiment: str, say: Callable[[str], None]
) -> TrainJobResult:
    reg = platform.registry
    say(f"data: {cfg.dataset.entity_table} + {len(cfg.dataset.features)} feature refs")
    ds, inputs, renames, versions, table_info = load_training_data(platform, cfg)
    prepared = prepare_data(
        ds, cfg.dataset, cfg.preprocessing, inputs, aliases=renames, seed=cfg.training.seed
    )
    rates = {k: round(v, 3) for k, v in prepared.positive_rate.items()}
    say(f"data: rows {prepared.rows}, positive rate {rates}, {prepared.input_dim} model inputs")
    reg.log_params(
        parent,
        {f"rows.{k}": v for k, v in prepared.rows.items()}
        | {"feature_versions": versions, "entity_table_version": table_info["version"]},
    )

    best, best_params, trials = _train(platform, cfg, prepared, run_name, experiment, parent, say)
    say(
        f"best: epoch {best.metrics['epoch']} {cfg.tune.metric} {best.metrics[cfg.tune.metric]:.4f}"
        + (f" params {best_params}" if best_params else "")
    )
    refs = {}
    for ref in cfg.dataset.features:
        full = ref.replace(":", "__", 1)
        refs[renames.get(full, full)] = ref
    with tempfile.TemporaryDirectory(prefix="raymlp-train-") as tmp:
        pub = Publication(
            cfg=cfg,
            final_cfg=apply_overrides(cfg, best_params) if best_params else cfg,
            registry=reg,
            prepared=prepared,
            best=best,
            best_params=best_params,
            run_id=parent,
            run_name=run_name,
            feature_versions=versions,
            table_info=table_info,
            signature=signature_for(prepared, cfg, refs),
            refs=refs,
            commit=detect_git_commit(),
            tmp=Path(tmp),
            say=say,
            weights=best.load_weights(),
            factory_modules=factory_modules(platform),
        )
        out = publish(pub)
    reg.log_metrics(
        parent,
        {
            **out.registry_metrics,
            **metrics_for_registry(out.fallback_metrics or {}, "fallback_test_"),
        },
    )
    return TrainJobResult(
        model_name=cfg.registry.model_name,
        version=out.version,
        run_id=parent,
        artifact_uri=reg.artifact_uri(cfg.registry.model_name, out.version),
        test_metrics=out.test_metrics,
        best_params=best_params,
        fallback_name=out.fallback_name,
        fallback_version=out.fallback_version,
        fallback_metrics=out.fallback_metrics,
        int8=out.int8,
        gate=out.gate,
        promotion=out.promotion,
        feature_versions=versions,
        rows=prepared.rows,
        trials=trials,
    )
