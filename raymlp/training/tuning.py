"""Hyperparameter search: Ray Tune drives one ``TorchTrainer`` (DeepSpeed) per trial.

The search space comes from the YAML as dotted config paths, each with one sampler::

    tune:
      search_space:
        optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
        model.kwargs.hidden_dims: {choice: [[64, 32], [128, 64]]}
        training.batch_size: {choice: [128, 256]}
      num_samples: 4
      max_concurrent_trials: 2
      time_budget_s: 600
      metric: val_auc
      asha: {grace_period: 1, reduction_factor: 2}

Each trial applies its sample to the base config (re-validated, so a sample that breaks a rule
fails that trial with a clear error), trains with Ray Train and reports every epoch to Tune
through ``TuneReportCallback``; ASHA stops bad trials early (its time unit is the epoch). Trial
callbacks (the registry's run tracking) are passed in by the caller. The best trial's best
checkpoint is found by scanning its run directory (:func:`find_best_checkpoint`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raymlp.errors import ConfigError, RayMLPError
from raymlp.training.trainer import BestCheckpoint, find_best_checkpoint, join_uri, make_trainer

if TYPE_CHECKING:
    from raymlp.config import TrainConfig

__all__ = ["search_space", "apply_overrides", "run_tune", "TuneOutcome", "TRIALS_DIR"]

log = logging.getLogger(__name__)

TRIALS_DIR = "trials"
_TRIAL_DRIVER_MEMORY = 64 * 1024 * 1024


def search_space(spec: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """YAML search space → Tune's ``param_space`` (same keys)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, sampler in spec.items():
        kind, args = next(iter(sampler.items()))
        if kind == "choice":
            out[key] = tune.choice(list(args))
        elif kind == "uniform":
            out[key] = tune.uniform(float(args[0]), float(args[1]))
        elif kind == "loguniform":
            out[key] = tune.loguniform(float(args[0]), float(args[1]))
        elif kind == "randint":
            out[key] = tune.randint(int(args[0]), int(args[1]))
        else:  # the config model already refuses other kinds
            raise ConfigError(
                f"tune.search_space.{key}: unknown sampler {kind!r}",
                field=f"tune.search_space.{key}",
            )
    return out


def apply_overrides(
    cfg: TrainConfig, overrides: dict[str, Any], source: str = "tune trial"
) -> TrainConfig:
    """A copy of ``cfg`` with dotted-path ``overrides`` applied and re-validated.

    Raises:
        ConfigError: the result breaks a rule (names the field).
    """
    from raymlp.config import TrainConfig, load_config

    data = cfg.model_dump(mode="json")
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(
                    f"{source}: {key}: {part!r} is not a section (rule: a dotted path to a "
                    "setting)",
                    field=key,
                )
            node = node.setdefault(part, {})
        node[parts[-1]] = copy.deepcopy(value)
    return load_config(TrainConfig, data, source=source)


def _max_epochs(cfg: TrainConfig) -> int:
    spec = cfg.tune.search_space.get("training.epochs")
    if not spec:
        return cfg.training.epochs
    kind, args = next(iter(spec.items()))
    values = args if kind == "choice" else [args[1]]
    return max(int(v) for v in values)


def _trial(
    params: dict[str, Any], *, base: str, datasets: dict[str, Any], input_dim: int, trials_uri: str
) -> None:
    """One Tune trial: a TorchTrainer whose reports flow to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raymlp.config import TrainConfig

    cfg = apply_overrides(TrainConfig.model_validate_json(base), params)
    trial_id = tune.get_context().get_trial_id()
    trainer = make_trainer(
        cfg,
        datasets,
        input_dim,
        storage_path=trials_uri,
        name=trial_id,
        callbacks=[TuneReportCallback()],
    )
    trainer.fit()


@dataclass
class TuneOutcome:
    """What the search found: the best trial's overrides, its best checkpoint, every trial."""

    best_params: dict[str, Any]
    best_trial_id: str
    best: BestCheckpoint
    trials: list[dict[str, Any]] = field(default_factory=list)


def run_tune(
    cfg: TrainConfig,
    datasets: dict[str, Any],
    input_dim: int,
    *,
    storage_path: str,
    run_name: str,
    callbacks: list[Any] | None = None,
) -> TuneOutcome:
    """Run the search; returns the best trial by ``tune.metric`` (its best epoch).

    Raises:
        RayMLPError: every trial failed (the first error is quoted).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    metric = cfg.tune.metric
    mode: str = cfg.tune.mode or "max"  # never None: TuneSettings implies it from the metric
    max_t = _max_epochs(cfg)
    scheduler = (
        ASHAScheduler(
            time_attr="epoch",
            max_t=max_t,
            grace_period=min(cfg.tune.asha.grace_period, max_t),
            reduction_factor=cfg.tune.asha.reduction_factor,
        )
        if cfg.tune.asha.enabled
        else FIFOScheduler()
    )
    trials_uri = join_uri(storage_path, run_name, TRIALS_DIR)
    trainable = tune.with_parameters(
        _trial,
        base=cfg.model_dump_json(),
        datasets={k: datasets[k] for k in ("train", "validation")},
        input_dim=input_dim,
        trials_uri=trials_uri,
    )
    # The trial function only drives a TorchTrainer (whose workers hold the CPUs): reserve no
    # CPU for it, or it would starve its own workers on a small cluster. Tune refuses an empty
    # request, so it asks for a little memory instead.
    trainable = tune.with_resources(trainable, {"cpu": 0, "memory": _TRIAL_DRIVER_MEMORY})
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(cfg.tune.search_space),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            scheduler=scheduler,
            num_samples=cfg.tune.num_samples,
            max_concurrent_trials=cfg.tune.max_concurrent_trials,
            time_budget_s=cfg.tune.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=storage_path,
            callbacks=[*(callbacks or []), _janitor_callback()],
        ),
    )
    try:
        with keep_signal_handlers():
            grid = tuner.fit()
    finally:
        _remove_orphaned_placement_groups()
    results = [grid[i] for i in range(len(grid))]
    trials: list[dict[str, Any]] = []
    for r in results:
        m = r.metrics or {}
        trials.append(
            {
                "trial_id": m.get("trial_id"),
                "params": _jsonable(r.config),
                "epochs": m.get("epoch"),
                metric: m.get(metric),
                "error": str(r.error).splitlines()[0][:300] if r.error else None,
            }
        )
    ok = [r for r in results if r.metrics and r.metrics.get(metric) is not None]
    if not ok:
        first = next((t["error"] for t in trials if t["error"]), "no trial reported a result")
        raise RayMLPError(f"every Tune trial failed: {first}", run=run_name)
    best_result = grid.get_best_result(metric=metric, mode=mode, scope="all")
    trial_id = (best_result.metrics or {})["trial_id"]
    best = find_best_checkpoint(join_uri(trials_uri, trial_id), metric, mode)
    return TuneOutcome(
        best_params=_jsonable(best_result.config), best_trial_id=trial_id, best=best, trials=trials
    )


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Restore SIGINT/SIGTERM handlers after Tune/Train: Tune installs its own "stop the
    experiment" handler and leaves it behind, which would swallow a later Ctrl-C (the demo's
    serve-until-Ctrl-C loop, a stream job's graceful stop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _remove_orphaned_placement_groups() -> list[str]:
    """Remove this job's placement groups whose creator actor has died.

    When Tune stops a trial (ASHA, or ``max_t``) it kills the trial actor, and the Ray Train
    controller that actor owns dies without removing its workers' placement group. Ray frees a
    placement group only once its creator actor *and* its job are gone, and Train's detached
    ``PlacementGroupCleaner`` finds the cluster by auto-detection, which fails when several Ray
    instances share a machine — so the CPUs would stay reserved and later trials would wait
    forever. A non-detached group created by a Train controller that is now dead serves nobody.
    """
    import ray
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job = ray.get_runtime_context().get_job_id()
    removed: list[str] = []
    try:
        table = ray._private.state.state._connect_and_get_accessor().get_placement_group_table()
    except Exception as e:  # an internal API: never let housekeeping fail the search
        log.debug("cannot read the placement group table: %s", e)
        return removed
    nil = ray.ActorID.nil().binary()
    for raw in table:
        pg = gcs_pb2.PlacementGroupTableData.FromString(raw)  # type: ignore[attr-defined]
        if (
            pg.is_detached
            or pg.creator_actor_id == nil  # made by a driver (Tune's own trial groups)
            or not pg.creator_actor_dead
            or pg.state == gcs_pb2.PlacementGroupTableData.REMOVED  # type: ignore[attr-defined]
            or pg.creator_job_id.hex() != job
            or _actor_class(pg.creator_actor_id.hex()) != "TrainController"
        ):
            continue
        try:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
            removed.append(pg.placement_group_id.hex())
        except Exception as e:  # removed meanwhile
            log.debug("placement group %s not removed: %s", pg.placement_group_id.hex(), e)
    if removed:
        log.info("removed %d placement group(s) left by stopped trials", len(removed))
    return removed


def _actor_class(actor_id: str) -> str | None:
    import ray

    try:
        return (ray._private.state.state.actor_table(actor_id) or {}).get("ActorClassName")
    except Exception:  # unknown: leave the group alone
        return None


def _janitor_callback(interval_s: float = 1.0) -> Any:
    """A Tune callback that frees stopped trials' worker placement groups while the search
    runs (so the next trials get the CPUs/GPUs), at most once per ``interval_s``."""
    from ray import tune

    class PlacementGroupJanitor(tune.Callback):
        def __init__(self) -> None:
            self._last = 0.0

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            now = time.monotonic()
            if now - self._last >= interval_s:
                self._last = now
                _remove_orphaned_placement_groups()

    return PlacementGroupJanitor()


def _jsonable(d: Any) -> Any:
    return json.loads(json.dumps(d, default=str))
