"""Small example models for trying the serving application, its tests and its benchmark.

:func:`make_artifact` writes a real model artifact (:mod:`raymlp.predictor`'s format: fitted
preprocessor, weights, signature) for a churn-like table without running a training job, and
:func:`flaky_mlp` is a model factory whose behaviour a control file changes live (fail, or be
slow), to exercise fallbacks and circuit breakers on a running application::

    from raymlp.serving.examples import make_artifact, example_features
    path = make_artifact("/tmp/churn-v1", seed=1)
    p.registry.register("customer-churn", path, signature=read_json(path, "signature"))
    example_features(7)   # {'tenure_months': 7, 'monthly_charges': 61.5, ...}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

__all__ = [
    "FEATURES",
    "CONTRACTS",
    "synthetic_table",
    "example_features",
    "make_artifact",
    "flaky_mlp",
    "set_control",
]

#: (name, signature dtype) of the example model's inputs.
FEATURES = [
    ("tenure_months", "int64"),
    ("monthly_charges", "float64"),
    ("contract", "string"),
    ("support_calls", "int64"),
]
CONTRACTS = ["month-to-month", "one-year", "two-year"]
#: The built-in network's factory, named the way artifacts name it.
_TABULAR_MLP = "raymlp.training.models:tabular_mlp"


def example_features(i: int) -> dict[str, Any]:
    """A deterministic, valid feature dict for request number ``i`` (distinct for every
    ``0 <= i < 100_000``, so a load of different ``i`` never hits a response cache)."""
    return {
        "tenure_months": i % 72,
        "monthly_charges": round(20.0 + (i % 100_000) * 0.001, 3),
        "contract": CONTRACTS[i % 3],
        "support_calls": i % 6,
    }


def synthetic_table(n: int = 256, seed: int = 0) -> pa.Table:
    """A churn-like table with the example inputs."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "tenure_months": rng.integers(0, 72, n),
            "monthly_charges": rng.uniform(20, 120, n).round(2),
            "contract": rng.choice(CONTRACTS, n),
            "support_calls": rng.integers(0, 6, n),
        }
    )


def make_artifact(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    hidden_dims: Sequence[int] = (16,),
    factory: str = _TABULAR_MLP,
    kwargs: dict[str, Any] | None = None,
    feature_refs: dict[str, str] | None = None,
    labels: Sequence[str] = ("stay", "churn"),
) -> Path:
    """Write a model artifact (random weights from ``seed``) and return its directory.

    ``kwargs`` default to ``{"hidden_dims": hidden_dims}``; ``feature_refs`` maps inputs to
    ``view:feature`` references for entity requests.
    """
    from raymlp.predictor.artifact import save_artifact
    from raymlp.predictor.factory import build_model
    from raymlp.predictor.preprocessing import PreprocessorFitter

    fitter = PreprocessorFitter([name for name, _ in FEATURES])
    fitter.update(synthetic_table(256, seed=0))
    pre = fitter.finish()
    kwargs = dict(kwargs) if kwargs is not None else {"hidden_dims": list(hidden_dims)}
    torch.manual_seed(seed)
    net = build_model(factory, pre.output_dim, kwargs)
    signature = {
        "inputs": [{"name": name, "dtype": dtype, "nullable": True} for name, dtype in FEATURES],
        "output": {"name": "churn", "kind": "binary", "labels": list(labels)},
    }
    return save_artifact(
        out_dir,
        factory=factory,
        kwargs=kwargs,
        state_dict=net.state_dict(),
        preprocessor=pre,
        signature=signature,
        spec_extra={"feature_refs": feature_refs or {}, "kind": "example"},
    )


def set_control(path: str | os.PathLike[str], *, fail: bool = False, delay_s: float = 0.0) -> None:
    """Tell every :func:`flaky_mlp` reading ``path`` to fail and/or sleep per forward pass."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps({"fail": fail, "delay_s": delay_s}))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


class _Flaky(nn.Module):
    def __init__(self, net: nn.Module, control: str | None) -> None:
        super().__init__()
        self.net = net
        self.control = control

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.control:
            try:
                ctl = json.loads(Path(self.control).read_text())
            except (OSError, ValueError):
                ctl = {}
            if ctl.get("delay_s"):
                time.sleep(float(ctl["delay_s"]))
            if ctl.get("fail"):
                raise RuntimeError("injected failure (raymlp.serving.examples control file)")
        return self.net(x)


def flaky_mlp(
    input_dim: int, hidden_dims: Sequence[int] = (16,), control: str | None = None
) -> nn.Module:
    """A tabular MLP that fails or sleeps while the JSON ``control`` file says so
    (``{"fail": true}``, ``{"delay_s": 0.5}``); see :func:`set_control`."""
    from raymlp.predictor.factory import build_model

    # By its import path, as an artifact names it: Serve code imports nothing from training.
    net = build_model(_TABULAR_MLP, input_dim, {"hidden_dims": hidden_dims})
    return _Flaky(net, control)
