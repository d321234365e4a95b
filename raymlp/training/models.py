"""Model factories: the built-in tabular networks.

A factory is any callable ``factory(input_dim, **kwargs) -> torch.nn.Module`` whose module maps a
float32 ``(n, input_dim)`` tensor to ``(n,)`` or ``(n, 1)`` logits of the positive class. Name it
in the YAML and the training job, the fallback and the serving loader all build it the same way
(:func:`raymlp.predictor.factory.build_model` resolves the path)::

    model:
      factory: my_package.nets:wide_and_deep     # importable on every Ray worker
      kwargs: {width: 256}

The factories here keep their import paths (``raymlp.training.models:tabular_mlp``) because
stored artifacts and configs name them by string::

    >>> from raymlp.predictor import build_model
    >>> net = build_model("raymlp.training.models:tabular_mlp", 8, {"hidden_dims": [16]})
    >>> count_params(net)
    161
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["tabular_mlp", "logistic_regression", "count_params"]


class TabularMLP(nn.Module):
    """Linear → activation → (dropout) blocks, then one logit. ``forward`` returns shape ``(n,)``."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 32),
        dropout: float = 0.0,
        activation: str = "relu",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        acts: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
        if activation not in acts:
            raise ValueError(f"activation {activation!r} is not one of {sorted(acts)}")
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden_dims:
            layers.append(nn.Linear(width, int(h)))
            if layer_norm:
                layers.append(nn.LayerNorm(int(h)))
            layers.append(acts[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def tabular_mlp(
    input_dim: int,
    hidden_dims: Sequence[int] = (64, 32),
    dropout: float = 0.0,
    activation: str = "relu",
    layer_norm: bool = False,
) -> nn.Module:
    """The churn example's network: an MLP over the preprocessed feature vector."""
    return TabularMLP(input_dim, hidden_dims, dropout, activation, layer_norm)


def logistic_regression(input_dim: int) -> nn.Module:
    """One linear layer: the default fallback model."""
    return TabularMLP(input_dim, hidden_dims=())


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
