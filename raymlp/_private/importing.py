"""The one import-path resolver: ``'package.module:attr'`` (or ``'package.module.attr'``) → object.

Used by on-demand feature UDFs, inference stream-source adapters and model factories. The config
layer validates the *format* with :data:`IMPORT_PATH_RE` (no import at load time); the caller
resolves with :func:`resolve_import_path` when it needs the object and maps
:class:`ImportPathError` onto its own error type and message.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

# The format rule lives in the foundation (config validates it at load time; an import may only
# point down the layers), re-exported here next to the resolver.
from raymlp.config._base import IMPORT_PATH_RE

__all__ = ["IMPORT_PATH_RE", "ImportPathError", "resolve_import_path", "split_import_path"]

Reason = Literal["malformed", "module", "attribute"]


class ImportPathError(ImportError):
    """An import path that does not resolve.

    Attributes:
        import_path: the path as given.
        what: what the caller was resolving (e.g. ``"udf"``, ``"model factory"``).
        reason: ``"malformed"`` (not ``module:attr`` / ``module.attr``), ``"module"`` (the module
            cannot be imported; ``__cause__`` holds the original error) or ``"attribute"`` (the
            module has no such attribute).
        detail: ``str()`` of the underlying error (for ``"module"``/``"attribute"``, exactly the
            text of the ``ImportError``/``AttributeError`` Python raised).
        module_name, attr: the two halves of the path (``""`` when malformed).
    """

    def __init__(
        self,
        import_path: str,
        what: str,
        reason: Reason,
        detail: str,
        module_name: str = "",
        attr: str = "",
    ) -> None:
        super().__init__(import_path, what, reason, detail, module_name, attr)
        self.import_path = import_path
        self.what = what
        self.reason = reason
        self.detail = detail
        self.module_name = module_name
        self.attr = attr

    def __str__(self) -> str:
        return f"{self.what} {self.import_path!r} cannot be imported: {self.detail}"

    def __reduce__(self) -> tuple[Any, ...]:
        # ImportError's own __reduce__ drops our constructor arguments' meaning; keep them.
        return (type(self), self.args)


def split_import_path(path: str) -> tuple[str, str]:
    """``(module, attr)`` of ``'module:attr'`` or ``'module.attr'``; ``("", "")`` if neither."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        return "", ""
    return module_name, attr


def resolve_import_path(path: str, *, what: str) -> Any:
    """Import ``path`` and return the object it names.

    ``path`` is ``'package.module:attr'`` or ``'package.module.attr'`` (the last dot splits when
    there is no colon). Nothing is checked about the object (callable, subclass, ...): the caller
    does that.

    Args:
        path: the import path.
        what: the caller's name for the thing, used in the error message (``"udf"``, ...).

    Raises:
        ImportPathError: (an ``ImportError``) with ``reason`` ``"malformed"``, ``"module"`` (the
            import raised; chained as ``__cause__``) or ``"attribute"`` (``getattr`` failed).
            Only ``ImportError`` raised while importing the module is wrapped; any other
            exception raised by the module's own code propagates unchanged.
    """
    if not isinstance(path, str):
        raise ImportPathError(str(path), what, "malformed", "not a string")
    module_name, attr = split_import_path(path)
    if not module_name:
        raise ImportPathError(path, what, "malformed", "not 'module:attr' or 'module.attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportPathError(path, what, "module", str(e), module_name, attr) from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ImportPathError(path, what, "attribute", str(e), module_name, attr) from None
