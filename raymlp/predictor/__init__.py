"""The model artifact format: what training writes and serving, batch and stream inference load.

- :mod:`~raymlp.predictor.artifact` — the artifact directory, :func:`save_artifact`,
  :func:`load_predictor` and the :class:`Predictor` it returns;
- :mod:`~raymlp.predictor.preprocessing` — the fitted feature transform (same numbers in training
  and serving);
- :mod:`~raymlp.predictor.factory` — building the network an artifact names by import path.

It sits below the SDK and the Serve app and imports no training code, so a Serve replica loads
a model without ``raymlp.training`` (only the factory an artifact names is imported). Names are
imported lazily so ``import raymlp.predictor`` stays cheap::

    from raymlp.predictor import load_predictor
    pred = load_predictor("/path/to/.raymlp/models/customer-churn/3")
    pred.predict_proba([{"tenure_months": 3, "monthly_charges": 99.0, "contract": "one-year",
                         "support_calls": 4}])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raymlp.predictor.artifact import (
        Predictor,
        load_predictor,
        quantize_int8,
        read_json,
        save_artifact,
    )
    from raymlp.predictor.factory import build_model, resolve_factory
    from raymlp.predictor.preprocessing import ColumnSpec, Preprocessor, PreprocessorFitter

__all__ = [
    "load_predictor",
    "Predictor",
    "save_artifact",
    "read_json",
    "quantize_int8",
    "Preprocessor",
    "PreprocessorFitter",
    "ColumnSpec",
    "build_model",
    "resolve_factory",
]

_WHERE = {
    "load_predictor": "artifact",
    "Predictor": "artifact",
    "save_artifact": "artifact",
    "read_json": "artifact",
    "quantize_int8": "artifact",
    "Preprocessor": "preprocessing",
    "PreprocessorFitter": "preprocessing",
    "ColumnSpec": "preprocessing",
    "build_model": "factory",
    "resolve_factory": "factory",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"raymlp.predictor.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'raymlp.predictor' has no attribute {name!r}")
