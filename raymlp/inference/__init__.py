"""Batch and streaming inference on the platform's models and features.

- :mod:`~raymlp.inference.batch` — ``jobs.batch_predict``: entity table → point-in-time or latest
  features → an actor pool of predictors → a Delta predictions table with lineage;
- :mod:`~raymlp.inference.stream` — ``jobs.stream_predict``: tail an events source, push fresh
  features, score each event (Serve handle or a local predictor), commit results and offsets
  together (exactly once per event across restarts);
- :mod:`~raymlp.inference.sources` — the events sources: new versions of a Delta table, and the
  :class:`~raymlp.inference.sources.EventSource` interface for Kafka-style buses;
- :mod:`~raymlp.inference.pool` — warm predictor pools: actors that keep a model loaded between
  batch runs of one driver;
- :mod:`~raymlp.inference.predictions_table` — the predictions Delta tables and their commit lineage;
- :mod:`~raymlp.inference.model` — resolving the model version and mapping features to inputs.

Names are imported lazily (``import raymlp.inference`` does not import Ray or torch)::

    from raymlp.inference import run_batch_prediction, StreamProcessor
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "run_batch_prediction",
    "BatchPredictionResult",
    "BatchPredictor",
    "StreamProcessor",
    "EventSource",
    "DeltaTableSource",
    "prediction_history",
    "shutdown_pools",
]

_WHERE = {
    "run_batch_prediction": ("batch", "run_batch_prediction"),
    "BatchPredictionResult": ("batch", "BatchPredictionResult"),
    "BatchPredictor": ("batch", "BatchPredictor"),
    "StreamProcessor": ("stream", "StreamProcessor"),
    "EventSource": ("sources", "EventSource"),
    "DeltaTableSource": ("sources", "DeltaTableSource"),
    "prediction_history": ("table", "history"),
    "shutdown_pools": ("pool", "shutdown_pools"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module, attr = _WHERE[name]
        return getattr(importlib.import_module(f"raymlp.inference.{module}"), attr)
    raise AttributeError(f"module 'raymlp.inference' has no attribute {name!r}")
