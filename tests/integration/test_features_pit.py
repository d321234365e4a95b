"""The distributed point-in-time join against a row-by-row reference, on random data.

Two views keyed by different entities (so the plan re-partitions between them), one with a
non-default timestamp column, many data files (several commits), several hash partitions and
several entity blocks; one view is ingested from CSV.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import ray

T0 = datetime(2024, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")

REPO = {
    "entities": [
        {"name": "customer", "join_keys": ["customer_id"]},
        {"name": "region", "join_keys": ["region_id"], "value_type": "int64"},
    ],
    "feature_views": [
        {
            "name": "spend",
            "entities": ["customer"],
            "ttl": "5d",
            "online": False,
            "schema": [{"name": "amount", "dtype": "float64"}],
        },
        {
            "name": "weather",
            "entities": ["region"],
            "ttl": "0s",
            "online": False,
            "timestamp_field": "observed_at",
            "schema": [{"name": "temp", "dtype": "int64"}],
        },
    ],
}


def reference(entity_rows, feat_rows, ttl_days):
    """Row by row: the newest (ts, seq) with the same key, ts <= e_ts, ts > e_ts - ttl."""
    out = []
    for key, e_ts in entity_rows:
        best = None
        for seq, (f_key, f_ts, value) in enumerate(feat_rows):
            if f_key != key or f_ts > e_ts:
                continue
            if ttl_days and f_ts <= e_ts - timedelta(days=ttl_days):
                continue
            if best is None or (f_ts, seq) > best[0]:
                best = ((f_ts, seq), value)
        out.append(None if best is None else best[1])
    return out


def test_distributed_join_matches_reference(platform, tmp_path):
    fs = platform.features
    fs.apply(REPO)
    rng = np.random.default_rng(7)
    customers = [f"c{i}" for i in range(12)]
    # Whole hours over 20 days, so equal timestamps (ties) happen within and across commits.
    spend_rows, weather_rows = [], []
    for _commit in range(3):
        rows = [
            (
                customers[rng.integers(12)],
                T0 + timedelta(hours=int(rng.integers(480))),
                float(rng.integers(1000)),
            )
            for _ in range(60)
        ]
        spend_rows += rows  # later commits (and later rows) are "written later"
        fs.ingest(
            "spend",
            pa.table(
                {
                    "customer_id": [r[0] for r in rows],
                    "event_timestamp": pa.array([r[1] for r in rows], TS),
                    "amount": [r[2] for r in rows],
                }
            ),
        )
    for commit in range(2):
        rows = [
            (
                int(rng.integers(4)),
                T0 + timedelta(hours=int(rng.integers(480))),
                int(rng.integers(-10, 40)),
            )
            for _ in range(40)
        ]
        weather_rows += rows
        path = tmp_path / f"weather{commit}.csv"
        pacsv.write_csv(
            pa.table(
                {
                    "region_id": [r[0] for r in rows],
                    "observed_at": pa.array([r[1] for r in rows], pa.timestamp("s", tz="UTC")),
                    "temp": [r[2] for r in rows],
                }
            ),
            path,
        )
        fs.ingest("weather", str(path))
    entity_rows = [
        (
            customers[rng.integers(13) % 12] if i % 9 else "stranger",
            int(rng.integers(5)),
            T0 + timedelta(hours=int(rng.integers(-24, 520))),
        )
        for i in range(300)
    ]
    entity = pa.table(
        {
            "customer_id": [e[0] for e in entity_rows],
            "region_id": pa.array([e[1] for e in entity_rows], pa.int32()),  # widened to int64
            "event_timestamp": pa.array([e[2] for e in entity_rows], TS),
            "i": pa.array(range(len(entity_rows)), pa.int64()),
        }
    )
    blocks = ray.data.from_arrow([entity.slice(0, 100), entity.slice(100, 120), entity.slice(220)])
    ds = fs.get_historical_features(blocks, ["spend:amount", "weather:temp"], num_partitions=4)
    assert ds.feature_versions == {"spend": 3, "weather": 2}
    got = sorted(ds.take_all(), key=lambda r: r["i"])
    assert [r["i"] for r in got] == list(range(300))
    want_spend = reference([(e[0], e[2]) for e in entity_rows], spend_rows, 5)
    want_temp = reference([(e[1], e[2]) for e in entity_rows], weather_rows, 0)
    assert [r["spend__amount"] for r in got] == want_spend
    assert [r["weather__temp"] for r in got] == want_temp
    assert sum(v is None for v in want_spend) > 10 and sum(v is not None for v in want_spend) > 10


SAME_KEY_REPO = {
    "entities": [{"name": "customer", "join_keys": ["customer_id"]}],
    "feature_views": [
        {
            "name": name,
            "entities": ["customer"],
            "ttl": ttl,
            "online": False,
            "schema": [{"name": "x", "dtype": "float64"}],
        }
        for name, ttl in (("a", "3d"), ("b", "0s"), ("c", "10d"))
    ],
}


@pytest.mark.parametrize("mode", ["one_wave", "wave_per_view", "shared_block"])
def test_views_with_the_same_keys_join_in_waves_with_the_same_answer(platform, mode, monkeypatch):
    """Views sharing join keys are joined by one task per partition (one wave) unless their
    estimated rows exceed the wave budget; one big entity block is split by several tasks.
    Every plan gives the reference's answer."""
    from raymlp.features import pit

    if mode == "wave_per_view":
        monkeypatch.setattr(pit, "TARGET_WAVE_BYTES", 1)
    if mode == "shared_block":
        monkeypatch.setattr(pit, "MIN_SHARED_BLOCK_BYTES", 0)
    fs = platform.features
    fs.apply(SAME_KEY_REPO)
    rng = np.random.default_rng(11)
    customers = [f"c{i}" for i in range(9)]
    rows = {}
    for view in ("a", "b", "c"):
        rows[view] = [
            (
                customers[rng.integers(9)],
                T0 + timedelta(hours=int(rng.integers(300))),
                float(rng.integers(1000)),
            )
            for _ in range(80)
        ]
        fs.ingest(
            view,
            pa.table(
                {
                    "customer_id": [r[0] for r in rows[view]],
                    "event_timestamp": pa.array([r[1] for r in rows[view]], TS),
                    "x": [r[2] for r in rows[view]],
                }
            ),
        )
    entity_rows = [
        (customers[rng.integers(10) % 9] if i % 7 else None, T0 + timedelta(hours=int(h)))
        for i, h in enumerate(rng.integers(-10, 320, 200))
    ]
    entity = pa.table(
        {
            "customer_id": pa.array([e[0] for e in entity_rows], pa.string()),
            "event_timestamp": pa.array([e[1] for e in entity_rows], TS),
            "i": pa.array(range(len(entity_rows)), pa.int64()),
        }
    )
    ds = fs.get_historical_features(entity, ["a:x", "b:x", "c:x"], num_partitions=3)
    got = sorted(ds.take_all(), key=lambda r: r["i"])
    assert [r["i"] for r in got] == list(range(200))
    for view, ttl in (("a", 3), ("b", 0), ("c", 10)):
        want = reference(entity_rows, rows[view], ttl)
        assert [r[f"{view}__x"] for r in got] == want, view
    # A null join key matches nothing.
    assert all(r["a__x"] is None and r["c__x"] is None for r in got if r["customer_id"] is None)
