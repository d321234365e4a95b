"""The storage root: one URI turned into a pyarrow filesystem and deltalake storage options.

Every component reads and writes through :class:`Storage`, so all state lives under one root and
nothing escapes it (``..`` and absolute sub-paths are refused)::

    >>> from raymlp.storage import Storage
    >>> st = Storage("/tmp/raymlp-root")
    >>> st.uri("features", "customer_profile")      # what deltalake / Ray Data take
    '/tmp/raymlp-root/features/customer_profile'
    >>> st.write_bytes("models/churn/1/card.md", b"# card")
    >>> st.read_bytes("models/churn/1/card.md")
    b'# card'
"""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from raymlp.errors import StorageError, ValidationError

__all__ = ["Storage"]


class Storage:
    """A storage root URI with helpers for paths, files and Delta tables under it.

    Args:
        root: local path, ``file://``, ``s3://bucket/prefix`` or ``gs://bucket/prefix``.
        options: object-store options for deltalake/pyarrow (``AWS_REGION``...).
    """

    def __init__(self, root: str, options: dict[str, str] | None = None) -> None:
        self.options: dict[str, str] = dict(options or {})
        if "://" not in root:
            root = str(Path(root).expanduser().resolve())
        self.root = root.rstrip("/") or "/"
        scheme = root.split("://", 1)[0].lower() if "://" in root else "file"
        self.scheme = scheme
        try:
            if scheme == "file":
                local = root[len("file://") :] if root.startswith("file://") else root
                self.filesystem: pafs.FileSystem = pafs.LocalFileSystem()
                self._base = str(Path(local).resolve())
                self.root = self._base
            else:
                self.filesystem, self._base = pafs.FileSystem.from_uri(root)
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError with the cause
            raise StorageError(f"cannot open storage root {root!r}: {e}", uri=root) from e

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    def __reduce__(self):
        return (Storage, (self.root, self.options))

    # -- paths ------------------------------------------------------------------------------

    @staticmethod
    def _clean_parts(parts: Iterable[str]) -> list[str]:
        out: list[str] = []
        for part in parts:
            for seg in str(part).replace("\\", "/").split("/"):
                if seg in ("", "."):
                    continue
                if seg == "..":
                    raise ValidationError(
                        f"path {'/'.join(map(str, parts))!r} escapes the storage root "
                        "(rule: no '..' segments)",
                        field="path",
                        value="/".join(map(str, parts)),
                        rule="inside storage root",
                    )
                out.append(seg)
        return out

    def path(self, *parts: str) -> str:
        """Filesystem path (for ``self.filesystem``) of ``parts`` under the root."""
        for p in parts:
            if str(p).startswith("/") or "://" in str(p):
                raise ValidationError(
                    f"path {p!r} is absolute (rule: paths are relative to the storage root)",
                    field="path",
                    value=str(p),
                    rule="relative",
                )
        clean = self._clean_parts(parts)
        return posixpath.join(self._base, *clean) if clean else self._base

    def uri(self, *parts: str) -> str:
        """Full URI (local path for local roots) of ``parts``: what deltalake and Ray Data take."""
        p = self.path(*parts)
        if self.is_local:
            return p
        return f"{self.scheme}://{p}"

    def local_path(self, *parts: str) -> Path:
        """A ``pathlib.Path`` under a local root (raises StorageError for object stores)."""
        if not self.is_local:
            raise StorageError(f"storage root {self.root!r} is not local", uri=self.root)
        return Path(self.path(*parts))

    def delta_storage_options(self) -> dict[str, str] | None:
        """``storage_options`` for deltalake (None for local roots)."""
        return dict(self.options) if self.options else None

    def open_delta(self, *parts: str, version: int | None = None) -> Any:
        """The Delta table at ``parts`` (at ``version``), or None when there is none yet.

        Other errors (a bad version, the object store) propagate for the caller to name.
        """
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(
                self.uri(*parts), version=version, storage_options=self.delta_storage_options()
            )
        except TableNotFoundError:
            return None

    # -- files ------------------------------------------------------------------------------

    def exists(self, *parts: str) -> bool:
        info = self.filesystem.get_file_info(self.path(*parts))
        return info.type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> str:
        p = self.path(*parts)
        try:
            self.filesystem.create_dir(p, recursive=True)
        except OSError as e:
            raise StorageError(f"cannot create {p!r}: {e}", uri=self.uri(*parts)) from e
        return p

    def read_bytes(self, *parts: str) -> bytes:
        p = self.path(*parts)
        try:
            with self.filesystem.open_input_stream(p) as f:
                return f.read()
        except FileNotFoundError as e:
            raise StorageError(f"{self.uri(*parts)!r} does not exist", uri=self.uri(*parts)) from e
        except OSError as e:
            if "not found" in str(e).lower() or "no such file" in str(e).lower():
                raise StorageError(
                    f"{self.uri(*parts)!r} does not exist", uri=self.uri(*parts)
                ) from e
            raise StorageError(f"cannot read {self.uri(*parts)!r}: {e}", uri=self.uri(*parts)) from e

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file atomically (temp file + rename on local roots; object stores are atomic)."""
        p = self.path(rel)
        parent = posixpath.dirname(p)
        try:
            self.filesystem.create_dir(parent, recursive=True)
            if self.is_local:
                tmp = f"{p}.tmp-{uuid.uuid4().hex}"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, p)
            else:
                with self.filesystem.open_output_stream(p) as f:
                    f.write(data)
        except OSError as e:
            raise StorageError(f"cannot write {self.uri(rel)!r}: {e}", uri=self.uri(rel)) from e

    def delete(self, *parts: str) -> None:
        """Delete a file or a directory tree (no error if absent)."""
        p = self.path(*parts)
        info = self.filesystem.get_file_info(p)
        if info.type == pafs.FileType.Directory:
            self.filesystem.delete_dir(p)
        elif info.type == pafs.FileType.File:
            self.filesystem.delete_file(p)

    def listdir(self, *parts: str) -> list[str]:
        """Names directly under ``parts`` (empty if it does not exist)."""
        p = self.path(*parts)
        sel = pafs.FileSelector(p, allow_not_found=True, recursive=False)
        return sorted(posixpath.basename(i.path) for i in self.filesystem.get_file_info(sel))

    def upload_dir(self, local_dir: str | os.PathLike[str], *parts: str) -> str:
        """Copy a local directory tree under ``parts``; returns its URI."""
        src = Path(local_dir)
        if not src.is_dir():
            raise ValidationError(
                f"artifact directory {str(src)!r} does not exist (rule: an existing directory)",
                field="artifact_dir",
                value=str(src),
            )
        dest = self.path(*parts)
        if self.is_local:
            if Path(dest).exists():
                shutil.rmtree(dest)
            tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
            shutil.copytree(src, tmp)
            os.replace(tmp, dest)
        else:
            pafs.copy_files(str(src), dest, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.filesystem)
        return self.uri(*parts)

    def download_dir(self, *parts: str, dest: str | os.PathLike[str]) -> Path:
        """Copy the tree under ``parts`` to a local directory (a no-op path on local roots)."""
        if self.is_local:
            return Path(self.path(*parts))
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(*parts), str(out), source_filesystem=self.filesystem,
                        destination_filesystem=pafs.LocalFileSystem())
        return out

    def describe(self) -> dict[str, Any]:
        return {"root": self.root, "scheme": self.scheme}
