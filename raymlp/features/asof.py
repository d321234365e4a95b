"""The vectorised as-of join of one partition: entity rows x one feature view's rows.

Semantics (Feast's, plus two fixes): for each entity row, the feature row with the same join
keys whose timestamp ``t`` satisfies ``entity_ts - ttl < t <= entity_ts`` (no lower bound when
``ttl`` is 0); among rows with the same ``t`` the one written last (largest ``_seq``) wins; an
entity row without a match keeps its place with nulls (Feast drops it).

How: keys of both sides are dictionary-encoded together into integer codes; each feature row
gets a composite ``code * span + (t - t_min)`` (or a timestamp rank when that would overflow),
rows are sorted by ``(composite, _seq)`` and every entity row finds its candidate with one
``numpy.searchsorted``; a candidate is kept if its key matches and it is inside the TTL. Cost:
one sort of the feature rows, one binary search per entity row, one gather per column.

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

__all__ = ["asof_join", "latest_per_key", "key_codes"]

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
    entity rows come back in their input order.
    """
    n_e = entities.num_rows
    if n_e == 0 or features.num_rows == 0:
        out = entities
        for src, name in columns.items():
            typ = features.schema.field(src).type
            out = out.append_column(pa.field(name, typ), pa.nulls(n_e, typ))
        return out
    code_e, code_f, ncodes = key_codes(
        [entities.column(k) for k in keys], [features.column(k) for k in keys]
    )
    ts_e = _ts_us(entities.column(entity_ts))
    ts_f = _ts_us(features.column(feature_ts))
    seq = _as_array(features.column(SEQ_COLUMN)).to_numpy(zero_copy_only=False)

    tmin, tmax = int(ts_f.min()), int(ts_f.max())
    span = tmax - tmin + 1
    if ncodes * span < _LIMIT:
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
    order = np.lexsort((seq, comp_f))
    # Searching with sorted needles walks the sorted haystack in order (cache friendly):
    # measured 1.5-2x faster than random needles at 1M x 1.7M.
    e_order = np.argsort(comp_e, kind="stable")
    pos = np.empty(n_e, dtype=np.int64)
    pos[e_order] = np.searchsorted(comp_f[order], comp_e[e_order], side="right") - 1
    ok = valid & (pos >= 0)
    idx = order[np.where(ok, pos, 0)]
    ok &= code_f[idx] == code_e
    if ttl_us > 0:
        ok &= ts_f[idx] > ts_e - ttl_us
    take = pa.array(idx, mask=~ok)
    out = entities
    for src, name in columns.items():
        col = features.column(src).take(take)
        out = out.append_column(pa.field(name, col.type), col)
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
