"""Model artifacts under the storage root: ``models/<name>/<version>/``.

A client uploads an artifact directory to ``models/_staging/<id>/`` first; ``register`` copies it
to its final place *before* the version's event is committed, and removes the staged copy after.
A crash in between leaves at worst an orphan directory that a later ``register`` of the same
(never acknowledged) version number overwrites, or a stale staging directory that
:func:`sweep_staging` removes. On a local root the copy is a tree of hard links (instant, no
extra space)::

    publish_staged(storage, "models/_staging/9f2c...", "models/churn/3")
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from raymlp.errors import StorageError, ValidationError
from raymlp.storage import Storage

__all__ = ["new_staging_path", "publish_staged", "discard", "sweep_staging"]

STAGING = "models/_staging"


def new_staging_path() -> str:
    return f"{STAGING}/{uuid.uuid4().hex}"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish_staged(storage: Storage, staged: str, final: str) -> None:
    """Copy the staged tree to ``final`` (replacing a leftover of an aborted attempt)."""
    if not storage.exists(staged):
        raise ValidationError(
            f"staged artifact {staged!r} does not exist (rule: upload through the client)",
            field="artifact_dir",
            value=staged,
        )
    try:
        if storage.is_local:
            src, dst = Path(storage.path(staged)), Path(storage.path(final))
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
            shutil.copytree(src, tmp, copy_function=_link_or_copy)
            if dst.exists():
                shutil.rmtree(dst)
            os.replace(tmp, dst)
        else:
            storage.delete(final)
            pafs.copy_files(
                storage.path(staged),
                storage.path(final),
                source_filesystem=storage.filesystem,
                destination_filesystem=storage.filesystem,
            )
    except OSError as e:
        raise StorageError(
            f"cannot copy artifact {staged!r} to {final!r}: {e}", uri=storage.uri(final)
        ) from e


def discard(storage: Storage, path: str | None) -> None:
    """Remove a staged tree (best effort)."""
    if not path or not path.startswith(STAGING + "/"):
        return
    try:
        storage.delete(path)
    except OSError:
        pass


def sweep_staging(storage: Storage, max_age_s: float = 86_400.0) -> int:
    """Remove staged uploads older than ``max_age_s`` (abandoned by crashed clients)."""
    removed = 0
    now = time.time()
    sel = pafs.FileSelector(storage.path(STAGING), allow_not_found=True, recursive=False)
    try:
        infos = storage.filesystem.get_file_info(sel)
    except OSError:
        return 0
    for info in infos:
        mtime = info.mtime.timestamp() if info.mtime is not None else now
        if now - mtime > max_age_s:
            discard(storage, f"{STAGING}/{info.base_name}")
            removed += 1
    return removed
