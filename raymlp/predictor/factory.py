"""Building a network from its factory's import path: how an artifact's ``model.json`` (or a
training config) names the model it holds.

A factory is any callable ``factory(input_dim, **kwargs) -> torch.nn.Module`` whose module maps a
float32 ``(n, input_dim)`` tensor to ``(n,)`` or ``(n, 1)`` logits of the positive class. It is
named ``'module:function'`` — in the YAML and in every artifact — so the training job, the
fallback and the serving loader all build it the same way::

    >>> from raymlp.predictor.factory import build_model
    >>> net = build_model("raymlp.training.models:tabular_mlp", 8, {"hidden_dims": [16]})
    >>> sum(p.numel() for p in net.parameters())
    161

The built-in factories live in :mod:`raymlp.training.models` (stored artifacts name them by that
path); this module only resolves the path, so a Serve replica never imports the training code
until an artifact names it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from raymlp._private.importing import ImportPathError, resolve_import_path

__all__ = ["resolve_factory", "build_model"]


def resolve_factory(path: str) -> Callable[..., nn.Module]:
    """Import ``'module:function'`` and return the callable.

    Raises:
        ValueError: the path is malformed, or names nothing callable.
        ModuleNotFoundError: the module cannot be imported.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        # Stricter than the shared resolver: a factory is always written 'module:function'.
        raise ValueError(f"model factory {path!r} is not 'module:function'")
    try:
        fn = resolve_import_path(path, what="model factory")
    except ImportPathError as e:
        if e.reason == "module" and isinstance(e.__cause__, ImportError):
            raise e.__cause__ from None  # the import's own error, as before the shared resolver
        fn = None
    if fn is None or not callable(fn):
        raise ValueError(f"model factory {path!r}: {module_name} has no callable {attr!r}")
    return fn


def build_model(factory: str, input_dim: int, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build the network named by ``factory`` for ``input_dim`` inputs."""
    model = resolve_factory(factory)(int(input_dim), **(kwargs or {}))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {factory!r} returned {type(model).__name__}, not nn.Module")
    return model
