"""Distributed training: Ray Data preprocessing → Ray Tune × Ray Train ``TorchTrainer`` with
DeepSpeed → a registered, validated model with its fallback.

Modules (one concept each):

- :mod:`~raymlp.training.data` — read the labelled entity table, split by entity, build tensors;
- :mod:`~raymlp.training.models` — the built-in model factories (bring your own ``nn.Module``);
- :mod:`~raymlp.training.ds_config` — the DeepSpeed config (ZeRO 0-3, offload, bf16 when supported);
- :mod:`~raymlp.training.loop` — the Ray Train worker loop (DeepSpeed, checkpoints, resume);
- :mod:`~raymlp.training.trainer` / :mod:`~raymlp.training.tuning` — TorchTrainer and Ray Tune;
- :mod:`~raymlp.training.classification_metrics` / :mod:`~raymlp.training.evaluation` — AUC, log-loss, ECE...;
- the model artifact, :func:`load_predictor` and the preprocessing live in :mod:`raymlp.predictor`
  (re-exported here);
- :mod:`~raymlp.training.profile` — the reference profile for drift detection;
- :mod:`~raymlp.training.fallback`, :mod:`~raymlp.training.promotion`, :mod:`~raymlp.training.card`;
- :mod:`~raymlp.training.publish` — artifacts, INT8, fallback, registration, the gate applied;
- :mod:`~raymlp.training.pipeline` — the job end to end (``raymlp train``).

Names are imported lazily so ``import raymlp.training`` stays cheap (serving and inference
import :mod:`raymlp.predictor` directly, never this package)::

    from raymlp.training import run_training_job, load_predictor
    pred = load_predictor("/path/to/.raymlp/models/customer-churn/3")
    pred.predict_proba([{"tenure_months": 3, "monthly_charges": 99.0, "contract": "one-year",
                         "support_calls": 4}])
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "load_predictor",
    "Predictor",
    "save_artifact",
    "Preprocessor",
    "PreprocessorFitter",
    "binary_metrics",
    "build_model",
    "tabular_mlp",
    "run_training_job",
    "TrainJobResult",
]

_WHERE = {
    "load_predictor": "raymlp.predictor.artifact",
    "Predictor": "raymlp.predictor.artifact",
    "save_artifact": "raymlp.predictor.artifact",
    "Preprocessor": "raymlp.predictor.preprocessing",
    "PreprocessorFitter": "raymlp.predictor.preprocessing",
    "binary_metrics": "raymlp.training.classification_metrics",
    "build_model": "raymlp.predictor.factory",
    "tabular_mlp": "raymlp.training.models",
    "run_training_job": "raymlp.training.pipeline",
    "TrainJobResult": "raymlp.training.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'raymlp.training' has no attribute {name!r}")
