"""The as-of join engine: hand-built edge cases and a property test against a naive reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raymlp.features import asof
from raymlp.features.asof import asof_join, latest_per_key
from raymlp.features.dtypes import TS_TYPE

T0 = datetime(2024, 1, 1, tzinfo=UTC)
US_PER_DAY = 86_400_000_000


def ts(days: float) -> datetime:
    return T0 + timedelta(days=days)


def entities(rows: list[tuple[str, float]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([k for k, _ in rows], pa.string()),
            "event_timestamp": pa.array([ts(d) for _, d in rows], TS_TYPE),
            "row": pa.array(range(len(rows)), pa.int64()),
        }
    )


def features(rows: list[tuple[str, float, int, float | None]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([r[0] for r in rows], pa.string()),
            "event_timestamp": pa.array([ts(r[1]) for r in rows], TS_TYPE),
            "_seq": pa.array([r[2] for r in rows], pa.int64()),
            "value": pa.array([r[3] for r in rows], pa.float64()),
        }
    )


def join(ent: pa.Table, feat: pa.Table, ttl_days: float = 0) -> list[float | None]:
    out = asof_join(
        ent,
        feat,
        keys=["customer_id"],
        entity_ts="event_timestamp",
        feature_ts="event_timestamp",
        columns={"value": "v__value"},
        ttl_us=int(ttl_days * US_PER_DAY),
    )
    assert out.column("row").to_pylist() == list(range(ent.num_rows)), "input order kept"
    return out.column("v__value").to_pylist()


def test_latest_row_at_or_before_the_entity_time_wins():
    feat = features([("a", 1, 1, 10.0), ("a", 3, 2, 30.0), ("a", 5, 3, 50.0)])
    assert join(entities([("a", 0), ("a", 1), ("a", 4), ("a", 9)]), feat) == [
        None,
        10.0,
        30.0,
        50.0,
    ]


def test_ties_on_timestamp_go_to_the_row_written_last():
    # Same key and timestamp: the larger _seq wins, whatever the physical row order.
    feat = features([("a", 2, 7, 2.0), ("a", 2, 9, 9.0), ("a", 2, 8, 8.0)])
    assert join(entities([("a", 2), ("a", 3)]), feat) == [9.0, 9.0]


def test_exact_boundaries_feature_ts_equal_entity_ts_matches_and_ttl_edge_is_exclusive():
    feat = features([("a", 10, 1, 1.0)])
    # ttl 5 days: match iff entity_ts - 5d < 10 <= entity_ts, i.e. entity_ts in [10, 15).
    got = join(entities([("a", 9.999), ("a", 10), ("a", 14.999), ("a", 15), ("a", 16)]), feat, 5)
    assert got == [None, 1.0, 1.0, None, None]


def test_ttl_expiry_falls_back_to_nothing_not_to_an_older_row():
    feat = features([("a", 0, 1, 0.0), ("a", 10, 2, 10.0)])
    assert join(entities([("a", 12), ("a", 21)]), feat, ttl_days=5) == [10.0, None]


def test_missing_entities_and_empty_feature_tables_return_every_row_with_nulls():
    feat = features([("a", 1, 1, 1.0)])
    assert join(entities([("zz", 5), ("a", 5), ("b", 0)]), feat) == [None, 1.0, None]
    empty = features([])
    assert join(entities([("a", 5)]), empty) == [None]


def test_null_feature_values_are_returned_as_null_not_skipped():
    feat = features([("a", 1, 1, 1.0), ("a", 2, 2, None)])
    assert join(entities([("a", 3)]), feat) == [None]


def test_several_join_keys_and_int_keys():
    ent = pa.table(
        {
            "k1": pa.array([1, 1, 2], pa.int64()),
            "k2": ["x", "y", "x"],
            "event_timestamp": pa.array([ts(5)] * 3, TS_TYPE),
        }
    )
    feat = pa.table(
        {
            "k1": pa.array([1, 1, 2], pa.int64()),
            "k2": ["x", "y", "y"],
            "event_timestamp": pa.array([ts(1), ts(2), ts(3)], TS_TYPE),
            "_seq": pa.array([1, 2, 3], pa.int64()),
            "f": [10, 20, 30],
        }
    )
    out = asof_join(
        ent,
        feat,
        keys=["k1", "k2"],
        entity_ts="event_timestamp",
        feature_ts="event_timestamp",
        columns={"f": "v__f"},
    )
    assert out.column("v__f").to_pylist() == [10, 20, None]


def test_rank_fallback_gives_the_same_answer(monkeypatch):
    feat = features([("a", 1, 1, 1.0), ("b", 2, 2, 2.0), ("a", 3, 3, 3.0), ("a", 3, 4, 4.0)])
    ent = entities([("a", 0), ("a", 2), ("a", 3), ("b", 100), ("c", 1)])
    direct = join(ent, feat, 2)
    monkeypatch.setattr(asof, "_LIMIT", 2)  # forces the timestamp-rank path
    assert join(ent, feat, 2) == direct == [None, 1.0, 4.0, None, None]


def test_latest_per_key_keeps_newest_by_time_then_sequence():
    t = features([("a", 1, 5, 1.0), ("a", 2, 1, 2.0), ("b", 1, 1, 3.0), ("b", 1, 2, 4.0)])
    got = latest_per_key(t, ["customer_id"], "event_timestamp")
    assert sorted(zip(got.column("customer_id").to_pylist(), got.column("value").to_pylist())) == [
        ("a", 2.0),
        ("b", 4.0),
    ]


# -- property test -----------------------------------------------------------------------------


def reference(ent_rows, feat_rows, ttl_us):
    """The definition, row by row: newest (ts, seq) with same key, ts <= e_ts, ts > e_ts - ttl."""
    out = []
    for key, e_ts in ent_rows:
        best = None
        for f_key, f_ts, seq, value in feat_rows:
            if f_key != key or f_ts > e_ts or (ttl_us and f_ts <= e_ts - ttl_us):
                continue
            if best is None or (f_ts, seq) > best[0]:
                best = ((f_ts, seq), value)
        out.append(None if best is None else best[1])
    return out


keys_st = st.sampled_from(["a", "b", "c", "d", ""])
feat_st = st.lists(st.tuples(keys_st, st.integers(-5, 30), st.floats(-1e6, 1e6)), max_size=40)
ent_st = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d", "e", ""]), st.integers(-8, 40)), max_size=30
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feat=feat_st, ent=ent_st, ttl=st.sampled_from([0, 1, 3, 10]), seq_seed=st.integers(0, 2**31))
def test_matches_reference_on_random_data(feat, ent, ttl, seq_seed):
    seqs = np.random.default_rng(seq_seed).permutation(len(feat)).tolist()
    feat_rows = [(k, t, s, v) for (k, t, v), s in zip(feat, seqs)]
    unit = 1_000_000  # timestamps in whole seconds, as microseconds
    ft = pa.table(
        {
            "customer_id": pa.array([r[0] for r in feat_rows], pa.string()),
            "event_timestamp": pa.array([r[1] * unit for r in feat_rows], pa.int64()).cast(TS_TYPE),
            "_seq": pa.array([r[2] for r in feat_rows], pa.int64()),
            "value": pa.array([r[3] for r in feat_rows], pa.float64()),
        }
    )
    et = pa.table(
        {
            "customer_id": pa.array([k for k, _ in ent], pa.string()),
            "event_timestamp": pa.array([t * unit for _, t in ent], pa.int64()).cast(TS_TYPE),
        }
    )
    got = asof_join(
        et,
        ft,
        keys=["customer_id"],
        entity_ts="event_timestamp",
        feature_ts="event_timestamp",
        columns={"value": "v"},
        ttl_us=ttl * unit,
    )
    assert got.num_rows == len(ent)
    assert got.column("v").to_pylist() == reference(ent, feat_rows, ttl)


@pytest.mark.parametrize("n", [0, 1, 5])
def test_empty_and_tiny_entity_tables(n):
    feat = features([("a", 1, 1, 1.0)])
    assert join(entities([("a", 2)] * n), feat) == [1.0] * n


@pytest.mark.parametrize("limit", [None, 64])
def test_several_keys_with_absent_and_null_keys_match_the_reference(monkeypatch, limit):
    """Three key columns (codes combined, and re-densified when the product would overflow),
    feature keys no entity has, and null keys, which match nothing."""
    if limit is not None:
        monkeypatch.setattr(asof, "_LIMIT", limit)
    rng = np.random.default_rng(3)
    n_f, n_e = 300, 200

    def key(i: int) -> tuple[int | None, str, int]:
        return (None if i % 17 == 0 else int(rng.integers(3)), "xyz"[rng.integers(3)], i % 2)

    fk = [key(i + 1) for i in range(n_f)]
    ft = rng.integers(0, 50, n_f)
    ek = [key(i) for i in range(n_e)]
    et = rng.integers(0, 60, n_e)
    feat = pa.table(
        {
            "a": pa.array([k[0] for k in fk], pa.int64()),
            "b": [k[1] for k in fk],
            "c": pa.array([k[2] for k in fk], pa.int64()),
            "event_timestamp": pa.array([ts(float(t)) for t in ft], TS_TYPE),
            "_seq": pa.array(range(n_f), pa.int64()),
            "v": pa.array(range(n_f), pa.int64()),
        }
    )
    ent = pa.table(
        {
            "a": pa.array([k[0] for k in ek], pa.int64()),
            "b": [k[1] for k in ek],
            "c": pa.array([k[2] for k in ek], pa.int64()),
            "event_timestamp": pa.array([ts(float(t)) for t in et], TS_TYPE),
        }
    )
    out = asof_join(
        ent,
        feat,
        keys=["a", "b", "c"],
        entity_ts="event_timestamp",
        feature_ts="event_timestamp",
        columns={"v": "out"},
        ttl_us=20 * US_PER_DAY,
    )
    want = []
    for k, t in zip(ek, et):
        best = None
        for i, (fk_i, ft_i) in enumerate(zip(fk, ft)):
            if None in k or fk_i != k or not (t - 20 < ft_i <= t):
                continue
            if best is None or (ft_i, i) > best[0]:
                best = ((ft_i, i), i)
        want.append(None if best is None else best[1])
    assert out.column("out").to_pylist() == want
    assert sum(w is not None for w in want) > 20


def test_one_entity_index_serves_several_views_like_separate_joins():
    ent = entities([("a", 5), ("b", 5), ("c", 5), ("a", 1)])
    f1 = features([("a", 4, 1, 1.0), ("b", 2, 2, 2.0)])
    f2 = features([("a", 0, 1, 10.0), ("c", 5, 2, 30.0), ("zzz", 1, 3, 99.0)])
    index = asof.EntityIndex(ent, ["customer_id"], "event_timestamp")
    for feat in (f1, f2):
        cols = index.join(
            feat,
            keys=["customer_id"],
            feature_ts="event_timestamp",
            columns={"value": "v"},
            ttl_us=0,
        )
        assert pa.chunked_array([cols[0]]).to_pylist() == join(ent, feat)
    assert join(ent, f2) == [10.0, None, 30.0, 10.0]
