"""The online store: the latest value per entity per view, in memory, with TTL on read.

An :class:`OnlineTable` keeps one view columnar: a dict from entity key to a row slot, and one
numpy array per feature (plus validity masks), the event time and the ingestion sequence of
each slot. A lookup of a batch is one pass of dict gets and one fancy-index per feature; no
per-feature Python loop over rows. Upserts keep the newest row per key by ``(event time, _seq)``,
so late or replayed data never overwrites newer values.

Statuses (per entity and view, so per value): ``present``; ``not_found`` (no row for the
entity); ``expired`` (the row is older than the view's TTL at read time:
``event_ts <= now - ttl``). Values that are not ``present`` read as None; a present row may
still hold a null value (None with status ``present``).

Example::

    t = OnlineTable(keys=[("customer_id", "string")], features=[("tenure_months", "int64")],
                    ts_field="event_timestamp", ttl_us=30 * 86_400_000_000)
    t.upsert(arrow_table)
    status, values = t.read(["c1", "c2"], ["tenure_months"], now_us=...)
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa

from raymlp.features.asof import latest_per_key
from raymlp.features.dtypes import SEQ_COLUMN, TS_TYPE

__all__ = ["PRESENT", "NOT_FOUND", "EXPIRED", "STATUS_NAMES", "OnlineTable"]

PRESENT, NOT_FOUND, EXPIRED = 0, 1, 2
STATUS_NAMES = ("present", "not_found", "expired")
_NUMERIC = {
    "int32": np.int32,
    "int64": np.int64,
    "float32": np.float32,
    "float64": np.float64,
    "bool": np.bool_,
}


class _Column:
    """One feature: a numpy array (object dtype for strings/timestamps) and a validity mask."""

    __slots__ = ("dtype", "values", "valid", "no_nulls")

    def __init__(self, dtype: str, capacity: int) -> None:
        self.dtype = dtype
        self.values: np.ndarray = np.zeros(capacity, dtype=_NUMERIC.get(dtype, object))
        self.valid = np.zeros(capacity, dtype=bool)
        self.no_nulls = True  # no null was ever stored: reads can skip the validity mask

    def grow(self, capacity: int) -> None:
        values = np.zeros(capacity, dtype=self.values.dtype)
        values[: len(self.values)] = self.values
        valid = np.zeros(capacity, dtype=bool)
        valid[: len(self.valid)] = self.valid
        self.values, self.valid = values, valid

    def assign(self, slots: np.ndarray, arr: pa.Array | pa.ChunkedArray) -> None:
        valid = (
            np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            if arr.null_count
            else np.ones(len(arr), dtype=bool)
        )
        if self.dtype in _NUMERIC:
            filled = arr.fill_null(False if self.dtype == "bool" else 0) if arr.null_count else arr
            vals = np.asarray(filled.to_numpy(zero_copy_only=False), dtype=self.values.dtype)
        else:
            vals = np.array(arr.to_pylist(), dtype=object)
        self.values[slots] = vals
        self.valid[slots] = valid
        if arr.null_count:
            self.no_nulls = False


class OnlineTable:
    """Latest row per entity of one view (thread-safe)."""

    def __init__(
        self,
        keys: list[tuple[str, str]],
        features: list[tuple[str, str]],
        ts_field: str,
        ttl_us: int,
        capacity: int = 1024,
    ) -> None:
        self.keys = list(keys)
        self.ts_field = ts_field
        self.ttl_us = int(ttl_us)
        self._lock = threading.RLock()
        self._index: dict[Any, int] = {}
        self._n = 0
        self._cap = capacity
        self._ts = np.zeros(capacity, dtype=np.int64)
        self._seq = np.zeros(capacity, dtype=np.int64)
        self._cols: dict[str, _Column] = {n: _Column(t, capacity) for n, t in features}
        self.max_seq = 0
        self.last_event_us: int | None = None

    def __len__(self) -> int:
        return self._n

    @property
    def features(self) -> list[tuple[str, str]]:
        return [(n, c.dtype) for n, c in self._cols.items()]

    def redefine(self, features: list[tuple[str, str]], ttl_us: int) -> None:
        """Follow a changed definition: new features start null, removed ones are dropped."""
        with self._lock:
            self.ttl_us = int(ttl_us)
            cols = {}
            for name, dtype in features:
                old = self._cols.get(name)
                if old is None or old.dtype != dtype:
                    old = _Column(dtype, self._cap)
                    old.no_nulls = self._n == 0  # existing entities read it as null
                cols[name] = old
            self._cols = cols

    def _grow(self, need: int) -> None:
        cap = self._cap
        while cap < need:
            cap *= 2
        if cap == self._cap:
            return
        for name in ("_ts", "_seq"):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        for col in self._cols.values():
            col.grow(cap)
        self._cap = cap

    def _key_list(self, table: pa.Table) -> list[Any]:
        if len(self.keys) == 1:
            return table.column(self.keys[0][0]).to_pylist()
        return list(zip(*(table.column(k).to_pylist() for k, _ in self.keys)))

    def upsert(self, table: pa.Table) -> int:
        """Merge rows (keys, timestamp, ``_seq``, features); returns how many slots changed."""
        if table.num_rows == 0:
            return 0
        table = latest_per_key(table, [k for k, _ in self.keys], self.ts_field)
        ts = table.column(self.ts_field).cast(TS_TYPE).cast(pa.int64()).to_numpy()
        seq = table.column(SEQ_COLUMN).to_numpy()
        keys = self._key_list(table)
        with self._lock:
            get = self._index.get
            slots = np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
            new = slots < 0
            n_new = int(new.sum())
            if n_new:
                self._grow(self._n + n_new)
                fresh = np.arange(self._n, self._n + n_new, dtype=np.int64)
                slots[new] = fresh
                self._index.update(zip((k for k, m in zip(keys, new) if m), fresh.tolist()))
                self._n += n_new
                self._ts[fresh] = np.iinfo(np.int64).min
            old_ts, old_seq = self._ts[slots], self._seq[slots]
            newer = new | (ts > old_ts) | ((ts == old_ts) & (seq > old_seq))
            if not newer.all():
                sel = np.flatnonzero(newer)
                table, slots, ts, seq = table.take(pa.array(sel)), slots[sel], ts[sel], seq[sel]
            if len(slots):
                self._ts[slots] = ts
                self._seq[slots] = seq
                for name, col in self._cols.items():
                    if name in table.column_names:
                        col.assign(slots, table.column(name))
                    else:
                        col.valid[slots] = False
                        col.no_nulls = False
                self.max_seq = max(self.max_seq, int(seq.max()))
                hi = int(ts.max())
                self.last_event_us = (
                    hi if self.last_event_us is None else max(self.last_event_us, hi)
                )
            return len(slots)

    def read(
        self,
        keys: list[Any],
        features: list[str],
        now_us: int,
    ) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """Look up a batch: ``(status per row (uint8), {feature: values with None})``.

        ``keys`` are scalars (one join key) or tuples (several), already of the key type.
        """
        status, out, _ = self.read_with_ts(keys, features, now_us)
        return status, out

    def read_with_ts(
        self,
        keys: list[Any],
        features: list[str],
        now_us: int,
    ) -> tuple[np.ndarray, dict[str, list[Any]], np.ndarray]:
        """:meth:`read`, and the rows' event times (µs; 0 where not found) third: what a
        near-cache needs to expire a row by itself."""
        with self._lock:
            get = self._index.get
            idx = np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
            found = idx >= 0
            safe = np.where(found, idx, 0)
            status = np.where(found, PRESENT, NOT_FOUND).astype(np.uint8)
            if self.ttl_us > 0 and len(idx):
                expired = found & (self._ts[safe] <= now_us - self.ttl_us)
                status[expired] = EXPIRED
            ok = status == PRESENT
            all_ok = bool(ok.all())
            out: dict[str, list[Any]] = {}
            for name in features:
                col = self._cols[name]
                if all_ok and col.no_nulls:  # the common case: one gather, no masks
                    out[name] = col.values[safe].tolist()
                    continue
                vals = col.values[safe]
                mask = ok & col.valid[safe] if not all_ok else col.valid[safe]
                if mask.all():
                    out[name] = vals.tolist()
                else:
                    lst = vals.tolist()
                    for i in np.flatnonzero(~mask).tolist():
                        lst[i] = None
                    out[name] = lst
            return status, out, np.where(found, self._ts[safe], 0)

    def key_list(self, table: pa.Table) -> list[Any]:
        """The lookup keys of ``table``'s rows (scalars or tuples, as :meth:`read` takes)."""
        return self._key_list(table)

    def snapshot_size(self) -> dict[str, Any]:
        return {"entities": self._n, "capacity": self._cap}
