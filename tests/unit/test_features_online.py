"""Online store structure (newest wins, TTL on read), key hashing and on-demand functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from raymlp.config import FeatureField, OnDemandFeatureView
from raymlp.errors import ValidationError
from raymlp.features.dtypes import TS_TYPE
from raymlp.features.examples import charges_per_tenure
from raymlp.features.hashing import hash_keys, hash_values
from raymlp.features.ondemand import run_on_demand
from raymlp.features.online import EXPIRED, NOT_FOUND, PRESENT, OnlineTable

NOW = datetime(2024, 5, 1, tzinfo=UTC)
NOW_US = int(NOW.timestamp() * 1e6)
DAY_US = 86_400_000_000


def rows(data: list[tuple[str, float, int, int | None, str | None]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": [r[0] for r in data],
            "event_timestamp": pa.array([NOW - timedelta(days=r[1]) for r in data], TS_TYPE),
            "_seq": pa.array([r[2] for r in data], pa.int64()),
            "tenure": pa.array([r[3] for r in data], pa.int64()),
            "plan": pa.array([r[4] for r in data], pa.string()),
        }
    )


def table(ttl_days: float = 7) -> OnlineTable:
    return OnlineTable(
        [("customer_id", "string")],
        [("tenure", "int64"), ("plan", "string")],
        "event_timestamp",
        int(ttl_days * DAY_US),
        capacity=2,
    )


def test_upsert_keeps_the_newest_row_by_time_then_sequence_and_grows():
    t = table()
    t.upsert(rows([("a", 1, 1, 1, "x"), ("b", 1, 2, 2, "y"), ("c", 0, 3, 3, None)]))
    t.upsert(
        rows(
            [
                ("a", 2, 9, 100, "old"),  # older event time: ignored despite later seq
                ("b", 1, 5, 20, "tie-later"),  # same time, later seq: wins
                ("d", 0, 6, 4, "z"),
            ]
        )
    )
    status, vals = t.read(["a", "b", "c", "d", "zz"], ["tenure", "plan"], NOW_US)
    assert status.tolist() == [PRESENT] * 4 + [NOT_FOUND]
    assert vals["tenure"] == [1, 20, 3, 4, None]
    assert vals["plan"] == ["x", "tie-later", None, "z", None]
    assert len(t) == 4


def test_ttl_is_enforced_on_read_and_expired_values_read_as_none():
    t = table(ttl_days=7)
    t.upsert(rows([("fresh", 6.9, 1, 1, "a"), ("edge", 7, 2, 2, "b"), ("stale", 30, 3, 3, "c")]))
    status, vals = t.read(["fresh", "edge", "stale"], ["tenure"], NOW_US)
    assert status.tolist() == [PRESENT, EXPIRED, EXPIRED]
    assert vals["tenure"] == [1, None, None]
    forever = table(ttl_days=0)
    forever.upsert(rows([("stale", 3000, 1, 3, "c")]))
    assert forever.read(["stale"], ["tenure"], NOW_US)[0].tolist() == [PRESENT]


def test_redefine_adds_null_features_and_changes_ttl():
    t = table(ttl_days=1)
    t.upsert(rows([("a", 2, 1, 1, "x")]))
    assert t.read(["a"], ["tenure"], NOW_US)[0].tolist() == [EXPIRED]
    t.redefine([("tenure", "int64"), ("score", "float64")], 10 * DAY_US)
    status, vals = t.read(["a"], ["tenure", "score"], NOW_US)
    assert status.tolist() == [PRESENT] and vals == {"tenure": [1], "score": [None]}


def test_key_hash_is_deterministic_and_chunking_independent():
    arr = pa.array(["c1", "", "longer-customer-id-0001", "c1"])
    h = hash_keys([arr])
    assert h[0] == h[3] and len(set(h.tolist())) == 3
    assert (hash_keys([pa.chunked_array([arr[:1], arr[1:]])]) == h).all()
    assert (hash_values(["c1", "", "longer-customer-id-0001", "c1"], "string") == h).all()
    assert hash_values([5], "int64")[0] == hash_keys([pa.array([5])])[0]
    # Spread: 10k keys over 8 partitions, none empty or grossly uneven.
    counts = np.bincount(
        (hash_keys([pa.array([f"k{i}" for i in range(10_000)])]) % 8).astype(int), minlength=8
    )
    assert counts.min() > 1000


def _reference_hash(values: list[str | None]) -> list[int]:
    """The documented hash, byte by byte in Python: polynomial, length, SplitMix64."""
    mask = (1 << 64) - 1
    out = []
    for v in values:
        b = (v or "").encode()
        acc = sum(c * pow(0x100000001B3, j, 1 << 64) for j, c in enumerate(b))
        x = (acc + len(b) * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        out.append(x ^ (x >> 31))
    return out


@pytest.mark.parametrize(
    "values",
    [
        [f"c{i % 700:07d}" for i in range(5000)],  # one length, many repeats: byte matrix
        [None if i % 11 == 0 else "é" * (i % 9) for i in range(5000)],  # mixed, nulls
        ["ab", "c", "def"] * 2000,  # total bytes a multiple of the first length
        [f"k{i}" for i in range(300)],  # short column: no dictionary encoding
    ],
)
def test_key_hash_fast_paths_give_the_reference_values(values):
    arr = pa.array(values, pa.string())
    want = np.array(_reference_hash(values), dtype=np.uint64)
    assert (hash_keys([arr]) == want).all()
    assert (hash_keys([arr.dictionary_encode()]) == want).all()
    assert (hash_keys([pa.chunked_array([arr[:7], arr[7:]])]) == want).all()


def test_on_demand_function_runs_on_columns_with_nulls():
    od = OnDemandFeatureView(
        name="ratios",
        sources=["customer_profile:monthly_charges", "customer_profile:tenure_months"],
        request_schema=[FeatureField(name="requested_discount", dtype="float64")],
        udf="raymlp.features.examples:charges_per_tenure",
        features=[
            FeatureField(name="charges_per_tenure", dtype="float64"),
            FeatureField(name="discount_share", dtype="float64"),
        ],
    )
    t = pa.table(
        {
            "customer_profile__monthly_charges": [70.0, None, 10.0],
            "customer_profile__tenure_months": pa.array([7, 3, 0], pa.int64()),
            "requested_discount": [7.0, 1.0, 1.0],
        }
    )
    out = run_on_demand(od, t)
    assert out["ratios__charges_per_tenure"].to_pylist() == [10.0, None, None]
    assert out["ratios__discount_share"].to_pylist() == [0.1, None, 0.1]
    direct = charges_per_tenure(
        {
            "customer_profile__monthly_charges": np.array([70.0]),
            "customer_profile__tenure_months": np.array([7]),
            "requested_discount": np.array([7.0]),
        }
    )
    assert direct["charges_per_tenure"].tolist() == [10.0]
    bad = od.model_copy(update={"udf": "raymlp.features.examples:nope"})
    with pytest.raises(ValidationError, match="cannot be imported"):
        run_on_demand(bad, t)


def test_lookup_plan_keys_routing_and_rows():
    from pathlib import Path

    from raymlp.config import FeatureRepo, load_config_file
    from raymlp.errors import SchemaError
    from raymlp.features import lookup
    from raymlp.features.definitions import FeatureRegistry

    churn = Path(__file__).resolve().parents[2] / "configs" / "features" / "churn.yaml"
    reg = FeatureRegistry().plan_apply(load_config_file(FeatureRepo, churn)).registry
    plan = lookup.OnlinePlan(
        reg, ("customer_usage:calls_last_30d", "customer_profile:tenure_months")
    )
    assert len(plan.key_sets) == 1 and [r[0] for r in plan.requests] == [
        "customer_usage",
        "customer_profile",
    ]
    rows = [{"customer_id": 7}, {"customer_id": "c2"}, {"customer_id": "c3"}]
    key_cols, key_sets = lookup.entity_keys(plan, rows)
    assert key_sets == [["7", "c2", "c3"]]  # cast to the key type
    with pytest.raises(SchemaError):
        lookup.entity_keys(plan, [{"id": 1}])
    # Two shards: route, answer per shard, merge back into request order.
    parts = lookup.route(plan, key_sets, 2)
    assert sorted(i for idx, _ in parts for i in idx[0].tolist()) == [0, 1, 2]
    replies = []
    for idx, sub in parts:
        n = len(sub[0])
        st = bytes([0 if k != "c3" else 2 for k in sub[0]])
        replies.append(
            (
                idx,
                {
                    "customer_usage": (st, {"calls_last_30d": [len(k) for k in sub[0]]}),
                    "customer_profile": (bytes([1] * n), {"tenure_months": [None] * n}),
                },
            )
        )
    views = lookup.merge(plan, 3, replies)
    out = lookup.assemble(plan, views, key_cols, rows)
    assert [r["customer_usage__calls_last_30d"] for r in out] == [1, 2, 2]
    assert [r["_status"]["customer_usage__calls_last_30d"] for r in out] == [
        "present",
        "present",
        "expired",
    ]
    assert out[0]["_status"]["customer_profile__tenure_months"] == "not_found"
    assert out[0]["_status"] is out[1]["_status"]  # same statuses: one shared mapping
    with pytest.raises(TypeError):
        out[0]["_status"]["customer_usage__calls_last_30d"] = "present"
    cols = lookup.assemble(plan, views, key_cols, rows, format="columns")
    assert cols["columns"]["customer_id"] == ["7", "c2", "c3"]
    with pytest.raises(ValidationError):
        lookup.assemble(plan, views, key_cols, rows, format="xml")
