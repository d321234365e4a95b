"""A Ray Tune callback that tracks a tuning job in the registry: one parent run per job, one
child run per trial (its config as params, every reported result as metrics at its
``training_iteration``), ended FINISHED or FAILED with the trial::

    from ray import tune
    from raymlp.training.tune_callback import RegistryTuneCallback

    cb = RegistryTuneCallback(p, "churn-tuning", metric="val_auc", mode="max")
    tuner = tune.Tuner(train_fn, param_space={"lr": tune.grid_search([0.01, 0.1])},
                       run_config=tune.RunConfig(callbacks=[cb]))
    tuner.fit()
    p.registry.best_run("churn-tuning", "val_auc")      # the best trial's run
    cb.parent_run_id                                     # the job's run (tag best_run_id)

It runs in the Tune driver process; tracking failures are logged, never fatal to tuning.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, cast

from ray.tune import Callback

from raymlp._private.credentials import Caller
from raymlp.config import PlatformConfig, load_platform_config
from raymlp.errors import RayMLPError

__all__ = ["RegistryTuneCallback"]

logger = logging.getLogger(__name__)

#: Tune's bookkeeping keys: not metrics.
_SKIP = frozenset(
    {
        "done",
        "training_iteration",
        "trial_id",
        "date",
        "timestamp",
        "pid",
        "hostname",
        "node_ip",
        "config",
        "time_since_restore",
        "iterations_since_restore",
        "timesteps_since_restore",
        "experiment_id",
        "experiment_tag",
        "checkpoint_dir_name",
        "should_checkpoint",
        "timesteps_total",
        "episodes_total",
        "time_this_iter_s",
    }
)
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-/: ]")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}/"))
        else:
            out[_BAD_KEY_CHARS.sub("_", key)[:250]] = v
    return out


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in _flatten({k: v for k, v in result.items() if k not in _SKIP}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            try:
                v = cast(Any, v).item()  # numpy scalars
            except AttributeError:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
        if math.isfinite(float(v)):
            out[k] = float(v)
    return out


class RegistryTuneCallback(Callback):
    """Log every Tune trial as a run under one parent run.

    Args:
        platform_or_config: a connected :class:`~raymlp.client.Platform`, a PlatformConfig,
            or the path of platform.yaml.
        experiment: the experiment the runs belong to (created if needed).
        parent_run_id: an existing run to nest trials under (default: a new run for the job,
            ended with it).
        metric / mode: optional; the parent run gets the best trial's value of ``metric`` and
            the tag ``best_run_id``.
        principal: act as this caller (default: the platform's).
    """

    def __init__(
        self,
        platform_or_config: Any,
        experiment: str,
        parent_run_id: str | None = None,
        *,
        metric: str | None = None,
        mode: str = "max",
        principal: Caller | None = None,
    ) -> None:
        if hasattr(platform_or_config, "registry") and hasattr(platform_or_config, "config"):
            self._config: PlatformConfig = platform_or_config.config
            self._principal = principal or platform_or_config.caller
        else:
            if isinstance(platform_or_config, PlatformConfig):
                self._config = platform_or_config
            else:
                self._config = load_platform_config(platform_or_config)
            self._principal = principal
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self._own_parent = parent_run_id is None
        self.metric = metric
        self.mode = mode
        self.trial_runs: dict[str, str] = {}
        self._best: tuple[float, str] | None = None
        self._reg: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reg"] = None  # actor handles stay in this process
        return state

    @property
    def registry(self) -> Any:
        if self._reg is None:
            from raymlp._private.principals import resolve_principal
            from raymlp.client import Platform

            principal = self._principal or resolve_principal(self._config, None, None)
            self._reg = Platform(self._config, principal).registry
        return self._reg

    def _safe(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RayMLPError as e:
            logger.warning("registry tracking: %s failed: %s", what, e)
            return None

    # -- Tune hooks --------------------------------------------------------------------------

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        if self.parent_run_id is None:
            self.parent_run_id = self._safe(
                "start the tuning run",
                self.registry.start_run,
                self.experiment,
                params={"num_samples": num_samples, "total_num_samples": total_num_samples},
                tags={"raymlp.tune": "job"},
                name=f"{self.experiment}-tune",
            )

    def _run_of(self, trial: Any) -> str | None:
        run_id = self.trial_runs.get(trial.trial_id)
        if run_id is None:
            run_id = self._safe(
                f"start a run for trial {trial.trial_id}",
                self.registry.start_run,
                self.experiment,
                params=_flatten(dict(trial.config or {})),
                config=trial.config,
                parent_run_id=self.parent_run_id,
                name=str(trial),
                tags={"raymlp.tune": "trial", "tune.trial_id": trial.trial_id},
            )
            if run_id is not None:
                self.trial_runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run_of(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run_id = self._run_of(trial)
        metrics = _metrics(result)
        if run_id is None or not metrics:
            return
        step = result.get("training_iteration")
        self._safe(
            "log metrics",
            self.registry.log_metrics,
            run_id,
            metrics,
            int(step) if isinstance(step, int) else None,
        )
        if self.metric is not None and self.metric in metrics:
            value = metrics[self.metric]
            better = self._best is None or (
                value > self._best[0] if self.mode == "max" else value < self._best[0]
            )
            if better:
                self._best = (value, run_id)

    def _end(self, trial: Any, status: str) -> None:
        run_id = self.trial_runs.get(trial.trial_id)
        if run_id is not None:
            self._safe(
                f"end the run of trial {trial.trial_id}", self.registry.end_run, run_id, status
            )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.parent_run_id is None:
            return
        if self._best is not None:
            value, run_id = self._best
            self._safe(
                "tag the best run",
                self.registry.set_tags,
                self.parent_run_id,
                {"best_run_id": run_id},
            )
            self._safe(
                "log the best metric",
                self.registry.log_metrics,
                self.parent_run_id,
                {f"best_{self.metric}": value},
            )
        if self._own_parent:
            failed = any(getattr(t, "status", "") == "ERROR" for t in trials)
            self._safe(
                "end the tuning run",
                self.registry.end_run,
                self.parent_run_id,
                "FAILED" if failed else "FINISHED",
            )
