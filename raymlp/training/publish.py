"""From the best checkpoint to registered versions: artifacts, test evaluation, INT8 variant,
fallback model, registration with lineage, and the promotion gate acting on the registry.

:class:`Publication` carries what every step needs (the run, the prepared data, the signature,
lineage, a temp dir); :func:`publish` runs the steps in order. The gate's decision itself is
the pure :func:`raymlp.training.promotion.decide`; here it is applied through the registry
client — a *request* where the alias needs approval, never a bypass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raymlp.errors import ArtifactIntegrityError, NotFoundError, RayMLPError, ValidationError
from raymlp.predictor.artifact import Predictor, load_predictor, quantize_int8, save_artifact
from raymlp.training.card import CardFacts, render_card
from raymlp.training.data import PreparedData
from raymlp.training.evaluation import evaluate
from raymlp.training.fallback import train_fallback
from raymlp.training.models import count_params
from raymlp.training.profile import build_profile
from raymlp.training.promotion import decide
from raymlp.training.trainer import BestCheckpoint

__all__ = ["Publication", "Published", "publish", "metrics_for_registry"]

_NUMERIC_METRICS = (
    "auc",
    "accuracy",
    "log_loss",
    "brier",
    "ece",
    "precision",
    "recall",
    "f1",
    "positive_rate",
    "rows",
)


def metrics_for_registry(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric test metrics as ``{prefix + name: float}`` (registry metrics are numbers)."""
    return {f"{prefix}{k}": float(metrics[k]) for k in _NUMERIC_METRICS if k in metrics}


@dataclass
class Publication:
    """Everything the publishing steps share."""

    cfg: Any  # the job's TrainConfig
    final_cfg: Any  # with the best trial's overrides applied
    registry: Any  # p.registry
    prepared: PreparedData
    best: BestCheckpoint
    best_params: dict[str, Any]
    run_id: str
    run_name: str
    feature_versions: dict[str, Any]
    table_info: dict[str, Any]
    signature: dict[str, Any]
    refs: dict[str, str]
    commit: str | None
    tmp: Path
    say: Callable[[str], None]
    weights: dict[str, Any] = field(default_factory=dict)
    #: ``registry.model_factory_modules`` of the platform: artifacts are loaded back (for the
    #: test metrics and the gate) under the same allow-list serving applies
    factory_modules: list[str] | None = None

    @property
    def name(self) -> str:
        return self.cfg.registry.model_name

    def lineage(self) -> dict[str, Any]:
        features = self.cfg.dataset.features
        views = sorted({r.split(":", 1)[0] for r in features})
        return {
            "run_id": self.run_id,
            "feature_views": [
                {
                    "name": v,
                    "version": self.feature_versions.get(v),
                    "features": [r.split(":", 1)[1] for r in features if r.startswith(v + ":")],
                }
                for v in views
            ],
            "dataset_rows": sum(self.prepared.rows.values()),
            "dataset_uri": self.table_info["uri"],
            "code_commit": self.commit,
        }

    def spec_extra(self, kind: str, **more: Any) -> dict[str, Any]:
        return {
            "kind": kind,
            "feature_refs": self.refs,
            "label": self.cfg.dataset.label_column,
            "training": {
                "run_id": self.run_id,
                "run_name": self.run_name,
                "rows": self.prepared.rows,
                "split": self.prepared.info,
                "feature_versions": self.feature_versions,
                "entity_table": self.table_info,
                "best_epoch": self.best.metrics["epoch"],
                "best_params": self.best_params,
            },
            **more,
        }

    def card(
        self,
        name: str,
        kind: str,
        metrics: dict[str, Any],
        model: dict[str, Any],
        training: dict[str, Any],
    ) -> CardFacts:
        cfg, prepared = self.cfg, self.prepared
        return CardFacts(
            model_name=name,
            kind=kind,
            description=cfg.registry.description,
            owner=cfg.registry.owner,
            label=cfg.dataset.label_column,
            class_names=list(cfg.dataset.class_names),
            inputs=self.signature["inputs"],
            entity_table=self.table_info["uri"],
            feature_versions=self.feature_versions,
            rows=prepared.rows,
            positive_rate=prepared.positive_rate,
            split={"seed": cfg.dataset.split.seed, "fractions": prepared.info.get("fractions")},
            model=model,
            training=training,
            test_metrics=metrics,
            run_id=self.run_id,
            code_commit=self.commit,
        )


@dataclass
class Published:
    """What :func:`publish` registered and decided."""

    version: int
    test_metrics: dict[str, Any]
    registry_metrics: dict[str, float]
    int8: dict[str, Any] | None
    fallback_name: str | None
    fallback_version: int | None
    fallback_metrics: dict[str, Any] | None
    gate: dict[str, Any]
    promotion: dict[str, Any] | None


def _primary(pub: Publication) -> tuple[Predictor, Path, dict[str, Any], dict[str, Any]]:
    """Artifact → load back → score on the test split (the serving code path) → profile."""
    fc, prepared = pub.final_cfg, pub.prepared
    main_dir = save_artifact(
        pub.tmp / "primary",
        factory=fc.model.factory,
        kwargs=fc.model.kwargs,
        state_dict=pub.weights,
        preprocessor=prepared.preprocessor,
        signature=pub.signature,
        spec_extra=pub.spec_extra("primary"),
    )
    predictor = load_predictor(main_dir, factory_modules=pub.factory_modules)
    metrics, y, p = evaluate(predictor, prepared.raw["test"])
    pub.say(
        f"test: auc {metrics['auc']:.4f} accuracy {metrics['accuracy']:.4f} "
        f"log_loss {metrics['log_loss']:.4f} ece {metrics['ece']:.4f}"
    )
    columns = prepared.preprocessor.columns
    profile = build_profile(
        prepared.profile_sample,
        {c.name: "numeric" if c.kind == "numeric" else "categorical" for c in columns},
        dtypes={c.name: c.dtype for c in columns},
        total_rows=prepared.rows["train"],
        predictions=p,
        labels=y,
    )
    return predictor, main_dir, metrics, profile


def _int8(
    pub: Publication, predictor: Predictor, test: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    if not pub.cfg.quantize.enabled:
        return None, None
    qmodel = quantize_int8(predictor.model)
    qpred = Predictor(predictor.spec, predictor.preprocessor, qmodel, predictor.signature, "int8")
    q, _, _ = evaluate(qpred, pub.prepared.raw["test"])
    int8 = {
        "auc": q["auc"],
        "accuracy": q["accuracy"],
        "auc_delta": q["auc"] - test["auc"],
        "accuracy_delta": q["accuracy"] - test["accuracy"],
        "log_loss_delta": q["log_loss"] - test["log_loss"],
    }
    int8["recommended"] = bool(-int8["auc_delta"] <= pub.cfg.quantize.max_auc_drop)
    pub.say(f"int8: test auc {q['auc']:.4f} (delta {int8['auc_delta']:+.4f})")
    return int8, qmodel.state_dict()


def _fallback_task(
    train_ds: Any,
    input_dim: int,
    settings: dict[str, Any],
    teacher: dict[str, Any] | None,
    seed: int,
) -> Any:
    return train_fallback(train_ds, input_dim, settings, teacher=teacher, seed=seed)


def _fallback(
    pub: Publication, profile: dict[str, Any]
) -> tuple[str | None, int | None, dict[str, Any] | None]:
    """Train (a Ray task), evaluate and register the fallback; the primary's lineage names it."""
    import ray

    cfg, prepared = pub.cfg, pub.prepared
    if not cfg.fallback.enabled:
        return None, None, None
    name = cfg.fallback.model_name or f"{pub.name}-fallback"
    teacher = None
    if cfg.fallback.kind == "distilled_mlp":
        fc = pub.final_cfg
        teacher = {
            "factory": fc.model.factory,
            "kwargs": fc.model.kwargs,
            "state_dict": pub.weights,
        }
    pub.say(f"fallback: {cfg.fallback.kind} on the same train split")
    state, factory, kwargs = ray.get(
        ray.remote(_fallback_task)
        .options(num_cpus=1)
        .remote(
            prepared.tensors["train"],
            prepared.input_dim,
            cfg.fallback.model_dump(mode="json"),
            teacher,
            cfg.training.seed,
        )
    )
    common = dict(
        factory=factory,
        kwargs=kwargs,
        state_dict=state,
        preprocessor=prepared.preprocessor,
        signature=pub.signature,
        spec_extra=pub.spec_extra("fallback", fallback_for=pub.name),
    )
    fb_dir = save_artifact(pub.tmp / "fallback", **common)
    metrics, _, _ = evaluate(
        load_predictor(fb_dir, factory_modules=pub.factory_modules), prepared.raw["test"]
    )
    card = render_card(
        pub.card(
            name,
            "fallback",
            metrics,
            {"factory": factory, "kwargs": kwargs},
            {"kind": cfg.fallback.kind, "epochs": cfg.fallback.epochs},
        )
    )
    save_artifact(fb_dir, profile=profile, metrics=metrics, card=card, **common)
    version = pub.registry.register(
        name,
        fb_dir,
        run_id=pub.run_id,
        signature=pub.signature,
        metrics=metrics_for_registry(metrics, "test_"),
        lineage=pub.lineage(),
        card=card,
        description=f"fallback of {pub.name}",
    )
    pub.say(f"fallback: registered {name} v{version} (test auc {metrics['auc']:.4f})")
    return name, version, metrics


def _current_holder(pub: Publication) -> tuple[dict[str, Any] | None, int | None, str | None]:
    """The alias holder's metrics on *this* test split (None when nobody holds the alias),
    its version, and why it could not be scored (if so)."""
    alias = pub.cfg.promotion.alias
    try:
        current = pub.registry.get(pub.name, alias=alias)
    except NotFoundError:
        return None, None, None
    try:
        current_predictor = load_predictor(
            current.artifact_uri, factory_modules=pub.factory_modules
        )
        metrics, _, _ = evaluate(current_predictor, pub.prepared.raw["test"])
    except (ValidationError, NotFoundError, ArtifactIntegrityError) as e:
        return {}, current.version, f"cannot score {alias} v{current.version} on this split: {e}"
    pub.say(
        f"gate: {alias} is v{current.version}, test {pub.cfg.promotion.metric} "
        f"{metrics.get(pub.cfg.promotion.metric, float('nan')):.4f} on the same split"
    )
    return metrics, current.version, None


def apply_gate(
    pub: Publication,
    version: int,
    test_metrics: dict[str, Any],
    current: tuple[dict[str, Any] | None, int | None, str | None],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Decide, then request promotion (or move an alias that needs no approval, conditionally
    on the version beaten). Returns ``(gate decision, promotion outcome or None)``."""
    p, reg, say = pub.cfg.promotion, pub.registry, pub.say
    current_metrics, current_version, problem = current
    if problem:
        say(f"gate: {problem}: no promotion requested")
        return {"request": False, "reason": problem, "current_version": current_version}, None
    d = decide(
        test_metrics,
        current_metrics,
        metric=p.metric,
        margin=p.margin,
        min_value=p.min_value,
        alias=p.alias,
        current_version=current_version,
    )
    if not d.request:
        say(f"gate: {d.reason}: no promotion requested")
        return d.to_dict(), None
    try:
        if reg.requires_approval(pub.name, p.alias):
            request_id = reg.request_promotion(pub.name, version, p.alias, reason=d.reason)
            say(f"gate: {d.reason}: promotion requested ({request_id}), awaiting approval")
            return d.to_dict(), {"request_id": request_id, "alias": p.alias, "status": "pending"}
        # No approval configured for this alias: move it, but only if nobody moved it since
        # the comparison (compare-and-set on the version we beat).
        reg.promote(pub.name, version, p.alias, expected_version=current_version)
        say(f"gate: {d.reason}: {p.alias} -> v{version} (no approval required)")
        return d.to_dict(), {"alias": p.alias, "status": "promoted"}
    except RayMLPError as e:
        say(f"gate: promotion not made: {e}")
        return d.to_dict(), {"alias": p.alias, "status": "failed", "error": str(e)}


def publish(pub: Publication) -> Published:
    """Evaluate, build the variants and the fallback, register, and run the gate."""
    cfg, fc, best = pub.cfg, pub.final_cfg, pub.best
    predictor, main_dir, test, profile = _primary(pub)
    int8, int8_state = _int8(pub, predictor, test)
    fb_name, fb_version, fb_metrics = _fallback(pub, profile)

    facts = pub.card(
        pub.name,
        "primary",
        test,
        {
            "factory": fc.model.factory,
            "kwargs": fc.model.kwargs,
            "parameters": count_params(predictor.model),
        },
        {
            "optimizer": fc.optimizer.name,
            "lr": fc.optimizer.lr,
            "epochs (best)": best.metrics["epoch"],
            "workers": cfg.scaling.num_workers,
            "engine": best.metrics.get("engine", "deepspeed"),
            "ZeRO stage": best.metrics.get("zero_stage", fc.deepspeed.zero_stage),
            "precision": best.metrics.get("precision"),
            "tuned params": pub.best_params or "—",
        },
    )
    facts.int8 = int8
    fallback_ref = None
    if fb_version is not None:
        fallback_ref = {"name": fb_name, "version": fb_version}
        facts.fallback = {**fallback_ref, "auc": (fb_metrics or {})["auc"]}
    card = render_card(facts)
    save_artifact(
        main_dir,
        factory=fc.model.factory,
        kwargs=fc.model.kwargs,
        state_dict=pub.weights,
        preprocessor=pub.prepared.preprocessor,
        signature=pub.signature,
        profile=profile,
        metrics={**test, "best_val": best.metrics.get(cfg.tune.metric), "int8": int8},
        card=card,
        int8_state_dict=int8_state,
        spec_extra=pub.spec_extra("primary", fallback=fallback_ref),
    )
    lineage = pub.lineage()
    if fallback_ref:
        lineage["fallback_model"] = fallback_ref
    reg_metrics = metrics_for_registry(test, "test_")
    reg_metrics[f"best_{cfg.tune.metric}"] = float(best.metrics[cfg.tune.metric])
    if int8:
        reg_metrics["int8_test_auc_delta"] = float(int8["auc_delta"])
        reg_metrics["int8_test_accuracy_delta"] = float(int8["accuracy_delta"])
    # Score the current holder before this version exists, on the very same test rows.
    current = _current_holder(pub) if cfg.promotion.enabled else (None, None, None)
    version = pub.registry.register(
        pub.name,
        main_dir,
        run_id=pub.run_id,
        signature=pub.signature,
        metrics=reg_metrics,
        lineage=lineage,
        card=card,
        description=cfg.registry.description,
    )
    pub.say(f"registered {pub.name} v{version}")
    if cfg.promotion.enabled:
        gate, promotion = apply_gate(pub, version, test, current)
    else:
        gate, promotion = {"request": False, "reason": "promotion gate disabled"}, None
    return Published(
        version, test, reg_metrics, int8, fb_name, fb_version, fb_metrics, gate, promotion
    )
