"""Checking a model artifact before it is loaded: its files against the digests the registry
recorded at registration, and its factory against the allow-list of modules.

The digests come from the registry's event of the version (``digests`` of
:func:`~raymlp.registry.views.version_dict`), never from the artifact directory: whoever can
write the storage root could rewrite a digest file there along with the weights::

    >>> verify_artifact("/root/models/churn/3", digests, what="churn v3")   # None when intact
    >>> check_factory("os:system", ["raymlp", "torch.nn"], what="churn v3")
    Traceback (most recent call last):
    ArtifactIntegrityError: churn v3: model.json names factory 'os:system' ...
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow.fs as pafs

from raymlp.errors import ArtifactIntegrityError
from raymlp.registry.artifacts import compare_digests, factory_allowed, tree_digests

__all__ = ["verify_artifact", "check_factory", "default_factory_modules"]

logger = logging.getLogger(__name__)


def default_factory_modules() -> list[str]:
    """``registry.model_factory_modules`` of a default platform config."""
    from raymlp.config import RegistrySettings

    return list(RegistrySettings().model_factory_modules)


def verify_artifact(
    root: str | os.PathLike[str], digests: Mapping[str, str], *, what: str = "artifact"
) -> None:
    """Raise :class:`ArtifactIntegrityError` unless the files under the local directory
    ``root`` are exactly those of ``digests`` (no file missing, extra or changed)."""
    actual = tree_digests(pafs.LocalFileSystem(), str(Path(root).resolve()))
    diff = compare_digests(digests, actual)
    if not diff:
        return
    parts = [f"{k} {', '.join(v)}" for k, v in diff.items()]
    raise ArtifactIntegrityError(
        f"{what}: the artifact differs from its registered digests ({'; '.join(parts)}) "
        "(rule: every file must match the sha256 recorded at registration; re-register it)",
        uri=str(root),
        rule="registered digests",
        **diff,
    )


def check_factory(factory: object, modules: Sequence[str], *, what: str = "artifact") -> None:
    """Raise :class:`ArtifactIntegrityError` unless ``factory`` comes from ``modules``
    (checked before anything is imported)."""
    if not factory_allowed(factory, list(modules)):  # type: ignore[arg-type]
        raise ArtifactIntegrityError(
            f"{what}: model.json names factory {factory!r}, which is not in an allowed module "
            f"(rule: registry.model_factory_modules = {list(modules)})",
            factory=str(factory),
            rule="model_factory_modules",
        )
