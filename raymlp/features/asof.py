"""The vectorised as-of join of one partition: entity rows x one feature view's rows.

Semantics (Feast's, plus two fixes): for each entity row, the feature row with the same join
keys whose timestamp ``t`` satisfies ``entity_ts - ttl < t <= entity_ts`` (no lower bound when
``ttl`` is 0); among rows with the same ``t`` the one written last (largest ``_seq``) wins; an
entity row without a match keeps its place with nulls (Feast drops it).

How: the entity rows' keys are dictionary-encoded into integer codes (once per partition, for
every view: :class:`EntityIndex`) and each feature row's key is looked up in those
dictionaries, which drops feature rows no entity asks for; each feature row gets a composite
``code * span + (t - t_min)`` (or a timestamp rank when that would overflow), rows are sorted by
``(composite, _seq)`` and every entity row finds its candidate with one ``numpy.searchsorted``;
a candidate is kept if its key matches and it is inside the TTL. A null key matches nothing.
Cost: one sort of the feature rows, one binary search per entity row, one gather per column.

Example::

    out = asof_join(entities, features, keys=["customer_id"], entity_ts="event_timestamp",
                    feature_ts="event_timestamp", columns={"tenure_months": "p__tenure_months"},
                    ttl_us=30 * 86_400_000_000)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlp.features.dtypes import SEQ_COLUMN, TS_TYPE

__all__ = ["EntityIndex", "asof_join", "latest_per_key", "key_codes"]

_LIMIT = 1 << 62


def _as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _ts_us(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    arr = _as_array(col)
    if arr.type != TS_TYPE:
        arr = arr.cast(TS_TYPE)
    return arr.cast(pa.int64()).to_numpy(zero_copy_only=False)


def key_codes(
    left: list[pa.Array | pa.ChunkedArray], right: list[pa.Array | pa.ChunkedArray]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes for the key tuples of two tables (equal tuples -> equal codes).

    Returns ``(left_codes, right_codes, number_of_codes)`` as int64 arrays.
    """
    n_left = len(left[0])
    combined: np.ndarray | None = None
    card = 1
    for lcol, rcol in zip(left, right):
        both = pa.concat_arrays([_as_array(lcol), _as_array(rcol).cast(_as_array(lcol).type)])
        enc = pc.dictionary_encode(both)
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        k = max(1, len(enc.dictionary))
        if combined is None:
            combined, card = codes, k
        else:
            if card * k >= _LIMIT:  # re-densify before the product could overflow
                _, combined = np.unique(combined, return_inverse=True)
                card = int(combined.max()) + 1 if len(combined) else 1
            combined = combined * k + codes
            card *= k
    assert combined is not None
    if card >= _LIMIT // 4:
        _, combined = np.unique(combined, return_inverse=True)
        card = int(combined.max()) + 1 if len(combined) else 1
    return combined[:n_left], combined[n_left:], card


class EntityIndex:
    """The entity side of as-of joins, prepared once and reused for every view with the same
    join keys (a point-in-time join task joins several views to one partition of entities).

    Each key column is dictionary-encoded once; a feature row's key is looked up in those
    dictionaries (``index_in``), so feature rows whose key no entity row has are dropped
    before the sort. A null key matches nothing (as in SQL).

    Example::

        index = EntityIndex(entities, keys=["customer_id"], entity_ts="event_timestamp")
        cols = index.join(features, feature_ts="event_timestamp",
                          columns={"tenure_months": "p__tenure_months"}, ttl_us=0)
    """

    def __init__(self, entities: pa.Table, keys: list[str], entity_ts: str) -> None:
        self.num_rows = entities.num_rows
        self._dicts: list[pa.Array] = []
        # How the per-column codes combine into one: ("mul", k) multiplies in a column of k
        # codes; ("dense", uniq) maps the combined codes to their rank among ``uniq``.
        self._steps: list[tuple[str, object]] = []
        code: np.ndarray | None = None
        card = 1
        for k in keys:
            col = _as_array(entities.column(k))
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            enc = pc.dictionary_encode(col)
            self._dicts.append(enc.dictionary)
            c = _codes(enc.indices)
            n = max(1, len(enc.dictionary))
            if code is None:
                code, card = c, n
                continue
            if card * n >= _LIMIT:  # re-densify before the product could overflow
                code, card = self._densify(code)
            self._steps.append(("mul", n))
            code = np.where((code < 0) | (c < 0), -1, code * n + c)
            card *= n
        assert code is not None  # keys is never empty (the caller passes the view's keys)
        if card >= _LIMIT // 4:
            code, card = self._densify(code)
        self.codes, self.cardinality = code, card
        self.ts = _ts_us(entities.column(entity_ts))
        # Entities in (code, ts) order: every view's composite search key is non-decreasing
        # in it, so the binary searches of each view walk the haystack in order.
        # (Equal pairs may come in any order, so one quicksort of a composite does when it fits.)
        t_lo = int(self.ts.min()) if self.num_rows else 0
        t_span = (int(self.ts.max()) - t_lo + 1) if self.num_rows else 1
        if (card + 1) * t_span < _LIMIT:
            self._order = np.argsort((code + 1) * t_span + (self.ts - t_lo))
        else:
            self._order = np.lexsort((self.ts, code))

    def _densify(self, code: np.ndarray) -> tuple[np.ndarray, int]:
        uniq = np.unique(code[code >= 0])
        self._steps.append(("dense", uniq))
        dense = np.where(code >= 0, np.searchsorted(uniq, code), -1)
        return dense, max(1, len(uniq))

    def feature_codes(self, features: pa.Table, keys: list[str]) -> np.ndarray:
        """One code per feature row in this index's code space; -1 where no entity has it."""
        code: np.ndarray | None = None
        steps = iter(self._steps)
        for k, values in zip(keys, self._dicts):
            col = _as_array(features.column(k))
            if col.type != values.type:
                col = col.cast(values.type)
            c = _codes(pc.index_in(col, value_set=values))
            if code is None:
                code = c
                continue
            op, arg = next(steps)
            while op == "dense":
                code = _dense_lookup(code, arg)  # type: ignore[arg-type]
                op, arg = next(steps)
            code = np.where((code < 0) | (c < 0), -1, code * int(arg) + c)  # type: ignore[call-overload]
        assert code is not None
        for _op, arg in steps:  # the final densify, if any
            code = _dense_lookup(code, arg)  # type: ignore[arg-type]
        return code

    def join(
        self,
        features: pa.Table,
        *,
        keys: list[str],
        feature_ts: str,
        columns: dict[str, str],
        ttl_us: int = 0,
    ) -> list[pa.ChunkedArray | pa.Array]:
        """One array per ``columns`` item, aligned with the entity rows (null: no match)."""
        n_e = self.num_rows
        if n_e == 0 or features.num_rows == 0:
            return [pa.nulls(n_e, features.schema.field(src).type) for src in columns]
        code_f = self.feature_codes(features, keys)
        rows = np.flatnonzero(code_f >= 0)  # feature rows some entity can match
        if len(rows) == 0:
            return [pa.nulls(n_e, features.schema.field(src).type) for src in columns]
        code_f = code_f[rows]
        ts_f = _ts_us(features.column(feature_ts))[rows]
        seq = _as_array(features.column(SEQ_COLUMN)).to_numpy(zero_copy_only=False)[rows]
        code_e, ts_e = self.codes, self.ts

        tmin, tmax = int(ts_f.min()), int(ts_f.max())
        span = tmax - tmin + 1
        if self.cardinality * span < _LIMIT:
            comp_f = code_f * span + (ts_f - tmin)
            off = ts_e - tmin
            valid = off >= 0
            comp_e = code_e * span + np.minimum(off, span - 1)
        else:  # huge key x time range: rank the timestamps instead of offsetting them
            uniq = np.unique(ts_f)
            comp_f = code_f * len(uniq) + np.searchsorted(uniq, ts_f)
            rank_e = np.searchsorted(uniq, ts_e, side="right") - 1
            valid = rank_e >= 0
            comp_e = code_e * len(uniq) + np.maximum(rank_e, 0)
        # Ties on (key, time) go to the largest _seq. They are rare, so a plain quicksort
        # (5x faster than the two-key lexsort) and a check for equal neighbours come first.
        order = np.argsort(comp_f)
        haystack = comp_f[order]
        if len(haystack) > 1 and bool((haystack[1:] == haystack[:-1]).any()):
            order = np.lexsort((seq, comp_f))
            haystack = comp_f[order]
        e_order = self._order
        pos = np.empty(n_e, dtype=np.int64)
        pos[e_order] = np.searchsorted(haystack, comp_e[e_order], side="right") - 1
        ok = valid & (pos >= 0) & (code_e >= 0)
        idx = order[np.where(ok, pos, 0)]
        ok &= code_f[idx] == code_e
        if ttl_us > 0:
            ok &= ts_f[idx] > ts_e - ttl_us
        # A take with a null mask is 4x slower than a plain take followed by if_else.
        take = pa.array(rows[idx])
        matched = None if ok.all() else pa.array(ok)
        out = []
        for src in columns:
            col = features.column(src).take(take)
            out.append(col if matched is None else pc.if_else(matched, col, None))
        return out


def _codes(indices: pa.Array) -> np.ndarray:
    if indices.null_count:
        indices = pc.fill_null(indices, -1)
    return indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _dense_lookup(code: np.ndarray, uniq: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(uniq, code), max(0, len(uniq) - 1))
    hit = (code >= 0) & (len(uniq) > 0) & (uniq[pos] == code if len(uniq) else False)
    return np.where(hit, pos, -1)


def asof_join(
    entities: pa.Table,
    features: pa.Table,
    *,
    keys: list[str],
    entity_ts: str,
    feature_ts: str,
    columns: dict[str, str],
    ttl_us: int = 0,
) -> pa.Table:
    """``entities`` with one column per ``columns`` item (feature column -> output name).

    ``features`` must hold ``keys``, ``feature_ts``, ``_seq`` and the feature columns. The
    entity rows come back in their input order. Several views with the same keys: build one
    :class:`EntityIndex` and call its ``join`` per view.
    """
    out = entities
    if entities.num_rows == 0 or features.num_rows == 0:
        arrays = [pa.nulls(entities.num_rows, features.schema.field(s).type) for s in columns]
    else:
        index = EntityIndex(entities, keys, entity_ts)
        arrays = index.join(
            features, keys=keys, feature_ts=feature_ts, columns=columns, ttl_us=ttl_us
        )
    for (src, name), col in zip(columns.items(), arrays):
        out = out.append_column(pa.field(name, features.schema.field(src).type), col)
    return out


def latest_per_key(table: pa.Table, keys: list[str], ts: str) -> pa.Table:
    """The newest row per key: largest ``(ts, _seq)`` wins (rows in no particular order)."""
    if table.num_rows <= 1:
        return table
    ts_v = _ts_us(table.column(ts))
    seq = _as_array(table.column(SEQ_COLUMN)).to_numpy(zero_copy_only=False)
    codes, _, _ = key_codes(
        [table.column(k) for k in keys], [pa.array([], table.schema.field(k).type) for k in keys]
    )
    order = np.lexsort((seq, ts_v, codes))
    sorted_codes = codes[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = sorted_codes[1:] != sorted_codes[:-1]
    return table.take(pa.array(order[last]))
