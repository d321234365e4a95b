"""Online materialisation: the newest row per entity out of Delta data files.

Used by ``materialize`` (files added since the last materialised version, read by Ray tasks on
the client side and upserted into the online store in batches) and by the online store's
rebuild after a restart (every file of the current version, read inside the actor).

Example::

    for table in latest_in_file_groups(storage, files, schema, keys, ts, columns):
        online_table.upsert(table)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pds

from raymlp.features import offline
from raymlp.features.asof import latest_per_key
from raymlp.features.dtypes import TS_TYPE
from raymlp.storage import Storage

__all__ = ["window_filter", "latest_in_files", "group_files", "latest_in_file_groups"]

#: Files read per batch (bounds memory of the actor's rebuild and of each client task).
FILES_PER_GROUP = 16


def window_filter(
    ts_field: str, start: datetime | None, end: datetime | None
) -> pds.Expression | None:
    """``start <= ts <= end`` (either side optional) as a dataset filter."""
    filt = None
    if start is not None:
        filt = pds.field(ts_field) >= pa.scalar(start).cast(TS_TYPE)
    if end is not None:
        upper = pds.field(ts_field) <= pa.scalar(end).cast(TS_TYPE)
        filt = upper if filt is None else filt & upper
    return filt


def latest_in_files(
    storage: Storage,
    files: list[str],
    schema: pa.Schema,
    keys: list[str],
    ts_field: str,
    columns: list[str],
    filt: pds.Expression | None = None,
) -> pa.Table:
    """The newest row per key among ``files`` (rows outside ``filt`` ignored)."""
    table = offline.read_files(storage, files, schema, columns, filt)
    return latest_per_key(table, keys, ts_field)


def group_files(files: list[str], per_group: int = FILES_PER_GROUP) -> list[list[str]]:
    return [files[i : i + per_group] for i in range(0, len(files), per_group)]


def latest_in_file_groups(
    storage: Storage,
    files: list[str],
    schema: pa.Schema,
    keys: list[str],
    ts_field: str,
    columns: list[str],
    filt: pds.Expression | None = None,
) -> Iterator[pa.Table]:
    """:func:`latest_in_files` per group of files, one table at a time."""
    for group in group_files(files):
        yield latest_in_files(storage, group, schema, keys, ts_field, columns, filt)


def _split_by_shard(table: pa.Table, keys: list[str], shards: int) -> list[pa.Table]:
    if shards == 1:
        return [table]
    import numpy as np

    from raymlp.features.hashing import hash_keys

    h = (
        hash_keys([table.column(k) for k in keys]) % np.uint64(shards)
        if table.num_rows
        else np.zeros(0, dtype=np.uint64)
    )
    return [table.filter(pa.array(h == np.uint64(i))) for i in range(shards)]


def submit_latest(
    storage: Storage,
    files: list[str],
    schema: pa.Schema,
    keys: list[str],
    ts_field: str,
    columns: list[str],
    filt: pds.Expression | None,
    shards: int = 1,
) -> list[list[object]]:
    """Start one Ray task per group of files computing its newest row per key, split by online
    shard; returns, per group, one ObjectRef per shard."""
    import ray

    @ray.remote(num_cpus=1)
    def _task(group: list[str]) -> object:
        parts = _split_by_shard(
            latest_in_files(storage, group, schema, keys, ts_field, columns, filt), keys, shards
        )
        return parts[0] if shards == 1 else tuple(parts)

    out = []
    for group in group_files(files):
        # One ObjectRef, or a list of ``shards`` of them (Ray's stubs type only the first).
        refs: Any = _task.options(num_returns=shards).remote(group)
        out.append([refs] if shards == 1 else list(refs))
    return out
