"""One distributed training run: a Ray Train ``TorchTrainer`` running the DeepSpeed worker loop
over the prepared datasets, checkpointing under the storage root and surviving worker failures.

    >>> trainer = make_trainer(cfg, prepared.tensors, prepared.input_dim,
    ...                        storage_path=storage.uri("training"), name="churn-20261128")
    >>> result = trainer.fit()
    >>> best = find_best_checkpoint(f"{storage.uri('training')}/churn-20261128", "val_auc", "max")

``ScalingConfig`` takes ``num_workers``/``cpus_per_worker``/``use_gpu`` from the YAML; Ray Train
picks the process-group backend (NCCL with GPUs, gloo on CPUs). ``FailureConfig(max_failures)``
restarts the worker group after a failure, and the loop resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from raymlp.errors import NotFoundError
from raymlp.training.loop import STATE_FILE, WEIGHTS_FILE, loop_config, train_loop_per_worker

if TYPE_CHECKING:
    from ray.train.torch import TorchTrainer

    from raymlp.config import TrainConfig

__all__ = ["make_trainer", "loop_config_for", "find_best_checkpoint", "BestCheckpoint", "join_uri"]


def join_uri(base: str, *parts: str) -> str:
    """``base/part/...`` for local paths and ``scheme://`` URIs alike."""
    return posixpath.join(base, *parts)


def loop_config_for(cfg: TrainConfig, input_dim: int) -> dict[str, Any]:
    """The worker-loop dict for a validated TrainConfig."""
    return loop_config(
        model_factory=cfg.model.factory,
        model_kwargs=cfg.model.kwargs,
        input_dim=input_dim,
        optimizer=cfg.optimizer.model_dump(mode="json"),
        deepspeed=cfg.deepspeed.model_dump(mode="json"),
        epochs=cfg.training.epochs,
        batch_size=cfg.training.batch_size,
        shuffle_buffer_rows=cfg.training.shuffle_buffer_rows,
        seed=cfg.training.seed,
        metric=cfg.tune.metric,
    )


def make_trainer(
    cfg: TrainConfig,
    datasets: dict[str, Any],
    input_dim: int,
    *,
    storage_path: str,
    name: str,
    callbacks: list[Any] | None = None,
) -> TorchTrainer:
    """A ``TorchTrainer`` for one run named ``name`` under ``storage_path``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources: dict[str, float] = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config_for(cfg, input_dim),
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=cfg.training.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.training.checkpoints_to_keep,
                checkpoint_score_attribute=cfg.tune.metric,
                checkpoint_score_order=cfg.tune.mode,
            ),
            callbacks=callbacks or [],
        ),
        datasets={k: datasets[k] for k in ("train", "validation")},
    )


@dataclass
class BestCheckpoint:
    """The best checkpoint of a run: where it is and what its epoch reported."""

    uri: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]

    def load_weights(self) -> dict[str, Any]:
        """The consolidated fp32 ``state_dict`` saved by rank 0."""
        import io

        import torch

        fs, path = pafs.FileSystem.from_uri(_as_uri(self.uri))
        with fs.open_input_stream(posixpath.join(path, WEIGHTS_FILE)) as f:
            return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def _as_uri(path: str) -> str:
    return path if "://" in path else f"file://{path}"


def find_best_checkpoint(run_uri: str, metric: str, mode: str) -> BestCheckpoint:
    """Scan a Ray Train run directory for the checkpoint with the best ``metric``.

    Raises:
        NotFoundError: the run left no checkpoint with weights.
    """
    fs, base = pafs.FileSystem.from_uri(_as_uri(run_uri))
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=False))
    best: BestCheckpoint | None = None
    sign = 1.0 if mode == "max" else -1.0
    for info in infos:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint"):
            continue
        state_path = posixpath.join(info.path, STATE_FILE)
        weights = fs.get_file_info(posixpath.join(info.path, WEIGHTS_FILE))
        if weights.type != pafs.FileType.File:
            continue
        try:
            with fs.open_input_stream(state_path) as f:
                state = json.loads(f.read())
        except (OSError, ValueError):
            continue  # a checkpoint half-written when its worker died
        value = state["metrics"].get(metric)
        if value is None:
            continue
        uri = info.path if "://" not in run_uri else f"{run_uri.split('://', 1)[0]}://{info.path}"
        cand = BestCheckpoint(uri=uri, metrics=state["metrics"], history=state.get("history", []))
        if (
            best is None
            or sign * value > sign * best.metrics[metric]
            or (value == best.metrics[metric] and cand.metrics["epoch"] > best.metrics["epoch"])
        ):
            best = cand
    if best is None:
        raise NotFoundError(
            f"training run {run_uri!r} left no checkpoint with weights",
            kind="checkpoint",
            name=run_uri,
        )
    return best
