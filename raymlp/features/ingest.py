"""Batch ingestion: any dataset -> validated rows -> one ACID append to the view's Delta table.

Runs as a Ray Data pipeline: every block is validated and cast (:func:`~.validation.conform`),
numbered with ingestion sequence numbers, and written as a Parquet data file into the table
directory by a Ray task; the driver then commits all files in one transaction. A rejected block
fails the pipeline before anything is committed and the files already written are deleted, so
a rejected ingest leaves the table exactly as it was.

The caller supplies two callables (the SDK binds them to the feature store actor):
``reserve_seq(n) -> first`` hands out ``n`` sequence numbers, and
``commit(files, txn_id) -> version`` commits the written files.

Example::

    version, rows = ingest(to_dataset("data/profiles.parquet"), view, keys, storage,
                           reserve_seq=..., commit=...)
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from raymlp.config import FeatureView
from raymlp.errors import BadRequestError, find_raymlp_error
from raymlp.features import offline
from raymlp.features.dtypes import SEQ_COLUMN
from raymlp.features.validation import check_schema, conform
from raymlp.storage import Storage

if TYPE_CHECKING:
    from raymlp.features.tokenize import Tokenizer

__all__ = ["to_dataset", "ingest", "with_seq"]


def to_dataset(data: Any) -> Any:
    """A ``ray.data.Dataset`` from a path/URI (Parquet file or directory, CSV), a pyarrow
    Table, a pandas DataFrame or a Dataset (returned as is)."""
    import ray.data

    if isinstance(data, ray.data.Dataset):
        return data
    if isinstance(data, pa.Table):
        return ray.data.from_arrow(data)
    try:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return ray.data.from_arrow(pa.Table.from_pandas(data, preserve_index=False))
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    if isinstance(data, (str, os.PathLike)):
        path = str(data)
        if "://" not in path and not Path(path).exists():
            raise BadRequestError(f"data path {path!r} does not exist", field="data", value=path)
        lower = path.lower().rstrip("/")
        if lower.endswith((".csv", ".csv.gz")):
            return ray.data.read_csv(path)
        if Path(path).is_dir() and "://" not in path:
            names = os.listdir(path)
            if names and all(
                n.lower().endswith((".csv", ".csv.gz"))
                for n in names
                if not n.startswith((".", "_"))
            ):
                return ray.data.read_csv(path)
        return ray.data.read_parquet(path)
    raise BadRequestError(
        f"cannot ingest a {type(data).__name__} (rule: a path, pyarrow.Table, pandas.DataFrame "
        "or ray.data.Dataset)",
        field="data",
        value=type(data).__name__,
    )


def with_seq(table: pa.Table, first: int, position: int) -> pa.Table:
    """Insert the ``_seq`` column (``first, first+1, ...``) at ``position``."""
    seq = pa.array(range(first, first + table.num_rows), type=pa.int64())
    return table.add_column(position, pa.field(SEQ_COLUMN, pa.int64()), seq)


def ingest(
    ds: Any,
    view: FeatureView,
    keys: list[tuple[str, str]],
    storage: Storage,
    *,
    reserve_seq: Callable[[int], int],
    commit: Callable[[list[dict[str, Any]], str], int],
    txn_id: str | None = None,
    max_future_skew: timedelta | None = None,
    tokenizer: Tokenizer | None = None,
    sensitive: list[str] | None = None,
) -> tuple[int, int]:
    """Validate and append ``ds`` to the view's table; returns ``(version, rows)``.

    Raises SchemaError / ValidationError (nothing committed, no file left behind) on the first
    bad block: see :func:`~.validation.conform` (``max_future_skew`` bounds event times).
    ``sensitive`` columns are tokenized with ``tokenizer`` before any file is written, so raw
    values never reach the table.
    """
    sensitive = list(sensitive or [])
    if sensitive and tokenizer is None:
        raise ValueError("sensitive columns need a tokenizer")
    tok = tokenizer if sensitive else None
    txn_id = txn_id or f"ingest-{uuid.uuid4().hex}"
    schema = ds.schema()
    base = getattr(schema, "base_schema", schema)
    if isinstance(base, pa.Schema):
        check_schema(base, view, keys)  # fail fast, before any task runs
    prefix = f"part-{txn_id}"
    seq_pos = len(keys) + 1
    name, ts_field = view.name, view.timestamp_field

    def write_block(batch: pa.Table) -> pa.Table:
        table = conform(batch, view, keys, max_future_skew=max_future_skew)
        if table.num_rows == 0:
            return pa.table({"file": pa.array([], pa.string())})
        if tok is not None:
            table = tok.tokenize_table(table, sensitive)
        table = with_seq(table, reserve_seq(table.num_rows), seq_pos)
        meta = offline.write_data_file(storage, name, table, prefix, ts_field)
        return pa.table({"file": [json.dumps(meta)]})

    written = ds.map_batches(
        write_block, batch_format="pyarrow", batch_size=None, zero_copy_batch=True
    )
    written.set_name(f"raymlp-ingest-{name}")  # how the run shows in the Ray dashboard
    # The dataset's own context copy: surface the SchemaError itself, not Ray Data's wrapper.
    written.context.raise_original_map_exception = True
    try:
        rows = written.take_all()
    except BaseException as e:
        offline.delete_files(storage, name, prefix)
        cause = find_raymlp_error(e)
        if cause is not None:
            raise cause from None
        raise
    files = [json.loads(r["file"]) for r in rows]
    if not files:
        return -1, 0
    try:
        version = commit(files, txn_id)
    except BaseException:
        # The commit may have happened and only the reply was lost: keep the files then.
        offline.discard_uncommitted(storage, name, prefix, txn_id)
        raise
    return version, sum(f["num_records"] for f in files)
