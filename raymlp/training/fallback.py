"""The fallback model: small, fast, trained on the same train split as the primary.

Two kinds (``fallback.kind``):

- ``logistic_regression``: one linear layer on the preprocessed features, fitted to the labels;
- ``distilled_mlp``: a small MLP (``fallback.hidden_dims``) trained on a mix of the labels and the
  primary model's probabilities (knowledge distillation), so it mimics the primary closely.

It streams the train split's tensors (``Dataset.iter_torch_batches``) with Adam, inside one Ray
task, so the job's driver stays thin::

    >>> state, factory, kwargs = train_fallback(prepared.tensors["train"], prepared.input_dim,
    ...                                         cfg.fallback.model_dump())
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from raymlp.predictor.factory import build_model

__all__ = ["train_fallback", "fallback_factory"]

_DISTILL_WEIGHT = 0.5


def fallback_factory(settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(factory, kwargs)`` of the fallback network for the ``fallback`` settings."""
    if settings.get("kind", "logistic_regression") == "distilled_mlp":
        return "raymlp.training.models:tabular_mlp", {
            "hidden_dims": list(settings.get("hidden_dims") or [16])
        }
    return "raymlp.training.models:logistic_regression", {}


def train_fallback(
    train_ds: Any,
    input_dim: int,
    settings: dict[str, Any],
    *,
    teacher: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Train the fallback on ``train_ds`` (rows ``{"x", "y"}``) in this process.

    Args:
        settings: the ``fallback`` section (kind, hidden_dims, epochs, lr, batch_size).
        teacher: for ``distilled_mlp``: ``{"factory", "kwargs", "state_dict"}`` of the primary.

    Returns:
        ``(state_dict, factory, kwargs)``.
    """
    torch.manual_seed(seed)
    factory, kwargs = fallback_factory(settings)
    student = build_model(factory, input_dim, kwargs)
    teacher_net = None
    if settings.get("kind") == "distilled_mlp":
        if teacher is None:
            raise ValueError("a distilled fallback needs the teacher (the primary model)")
        teacher_net = build_model(teacher["factory"], input_dim, teacher["kwargs"])
        teacher_net.load_state_dict(teacher["state_dict"])
        teacher_net.eval()
    opt = torch.optim.Adam(student.parameters(), lr=float(settings.get("lr", 0.05)))
    student.train()
    for epoch in range(int(settings.get("epochs", 5))):
        for batch in train_ds.iter_torch_batches(
            batch_size=int(settings.get("batch_size", 256)),
            dtypes=torch.float32,
            local_shuffle_buffer_size=10_000,
            local_shuffle_seed=seed * 1000 + epoch,
        ):
            x, y = batch["x"], batch["y"].reshape(-1)
            logits = student(x).reshape(-1)
            loss = F.binary_cross_entropy_with_logits(logits, y)
            if teacher_net is not None:
                with torch.no_grad():
                    soft = torch.sigmoid(teacher_net(x).reshape(-1))
                loss = (1 - _DISTILL_WEIGHT) * loss + _DISTILL_WEIGHT * (
                    F.binary_cross_entropy_with_logits(logits, soft)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {k: v.detach().cpu() for k, v in student.state_dict().items()}, factory, kwargs
