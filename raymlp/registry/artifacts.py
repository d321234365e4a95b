"""Model artifacts under the storage root: ``models/<name>/<version>/``.

A client uploads an artifact directory to ``models/_staging/<id>/`` first; ``register`` copies it
to its final place *before* the version's event is committed, and removes the staged copy after.
A crash in between leaves at worst an orphan directory that a later ``register`` of the same
(never acknowledged) version number overwrites, or a stale staging directory that
:func:`sweep_staging` removes. On a local root the copy is a tree of hard links (instant, no
extra space)::

    publish_staged(storage, "models/_staging/9f2c...", "models/churn/3")

**Integrity.** ``register`` records the SHA-256 of every file of the staged tree in the
version's registry event (:func:`tree_digests`), not only inside the artifact directory, which
whoever can write the storage root could rewrite as well. Every load checks the files it reads
against them (:func:`compare_digests`; :func:`raymlp.predictor.integrity.verify_artifact`)::

    digests = tree_digests(storage.filesystem, storage.path("models/_staging/9f2c..."))
    digests["weights.pt"]                    # 'sha256:5d1c...'
    compare_digests(digests, tree_digests(fs, "/root/models/churn/3"))   # {} when intact
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import pyarrow.fs as pafs

from raymlp.errors import StorageError, ValidationError
from raymlp.storage import Storage

__all__ = [
    "new_staging_path",
    "publish_staged",
    "discard",
    "sweep_staging",
    "DIGEST_ALGORITHM",
    "file_digest",
    "tree_digests",
    "compare_digests",
]

STAGING = "models/_staging"

#: The prefix of every recorded digest (``sha256:<hex>``), so another algorithm can follow.
DIGEST_ALGORITHM = "sha256"
_CHUNK = 1 << 20


def file_digest(stream: object) -> str:
    """``sha256:<hex>`` of a binary stream (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    read = stream.read  # type: ignore[attr-defined]
    while chunk := read(_CHUNK):
        h.update(chunk)
    return f"{DIGEST_ALGORITHM}:{h.hexdigest()}"


def tree_digests(filesystem: pafs.FileSystem, base: str) -> dict[str, str]:
    """``{relative posix path: "sha256:<hex>"}`` of every file under ``base`` on
    ``filesystem`` (a pyarrow filesystem: the storage root's, or ``LocalFileSystem``).

    Raises:
        StorageError: ``base`` cannot be listed or a file cannot be read.
    """
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
        out: dict[str, str] = {}
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            rel = posixpath.relpath(info.path, base)
            with filesystem.open_input_stream(info.path) as f:
                out[rel] = file_digest(f)
    except OSError as e:
        raise StorageError(f"cannot read artifact files under {base!r}: {e}", uri=base) from e
    return dict(sorted(out.items()))


def compare_digests(
    expected: Mapping[str, str], actual: Mapping[str, str]
) -> dict[str, list[str]]:
    """What differs: ``{"missing": [...], "extra": [...], "changed": [...]}`` with only the
    non-empty lists (``{}``: the tree is exactly the registered one)."""
    out = {
        "missing": sorted(set(expected) - set(actual)),
        "extra": sorted(set(actual) - set(expected)),
        "changed": sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k]),
    }
    return {k: v for k, v in out.items() if v}


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


def factory_allowed(factory: str, modules: list[str] | tuple[str, ...]) -> bool:
    """Whether ``factory`` (``'module:function'``) comes from one of ``modules`` or a submodule
    of one (``registry.model_factory_modules``), judged on the name alone — before anything is
    imported, since importing a module already runs its code::

        >>> factory_allowed("raymlp.training.models:tabular_mlp", ["raymlp", "torch.nn"])
        True
        >>> factory_allowed("os:system", ["raymlp", "torch.nn"])
        False
    """
    if not isinstance(factory, str):
        return False
    module = factory.partition(":")[0] if ":" in factory else factory.rpartition(".")[0]
    return bool(module) and any(module == m or module.startswith(m + ".") for m in modules)
