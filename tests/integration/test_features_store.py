"""The feature store on a real local Ray cluster with real Delta tables.

Covers apply/versions, ingestion (paths, pandas, Ray Datasets) with schema rejection, the
distributed point-in-time join (several views, TTLs, partitions, time travel, on-demand views),
materialisation, online reads with TTL, pushes, the catalog and the CLI.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from raymlp.cli import main as cli_main
from raymlp.errors import ConflictError, NotFoundError, SchemaError

REPO = Path(__file__).resolve().parents[2]
CHURN = str(REPO / "configs" / "features" / "churn.yaml")
NOW = datetime.now(UTC).replace(microsecond=0)
US = 1_000_000


def day(d: float) -> datetime:
    return NOW - timedelta(days=d)


def profiles(rows: list[tuple[str, float, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "event_timestamp": pd.to_datetime([day(r[1]) for r in rows], utc=True),
            "tenure_months": np.array([r[2] for r in rows], dtype=np.int64),
            "monthly_charges": [r[3] for r in rows],
            "total_charges": [r[2] * r[3] for r in rows],
            "contract_type": ["month-to-month"] * len(rows),
            "paperless_billing": [True] * len(rows),
            "num_products": np.array([2] * len(rows), dtype=np.int32),
        }
    )


def usage(rows: list[tuple[str, float, int]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "event_timestamp": pa.array([day(r[1]) for r in rows], pa.timestamp("us", tz="UTC")),
            "calls_last_30d": pa.array([r[2] for r in rows], pa.int64()),
            "data_gb_last_30d": [float(r[2]) / 10 for r in rows],
            "support_tickets_90d": pa.array([0] * len(rows), pa.int64()),
            "dropped_call_rate": pa.array([0.01] * len(rows), pa.float32()),
        }
    )


def parquet_files(platform, view: str) -> list[str]:
    return sorted(n for n in platform.storage.listdir("features", view) if n.endswith(".parquet"))


def test_ingest_historical_online_and_catalog(platform, tmp_path):
    fs = platform.features
    changes = fs.apply(CHURN)
    assert {(c["name"], c["action"]) for c in changes} >= {
        ("customer", "created"),
        ("customer_profile", "created"),
        ("customer_usage", "created"),
        ("customer_ratios", "created"),
    }
    assert all(c["action"] == "unchanged" for c in fs.apply(CHURN))

    # Ingest from a Parquet path (v1), a pandas DataFrame (v2) and a Ray Dataset (usage v1).
    path = tmp_path / "profiles.parquet"
    pq.write_table(
        pa.Table.from_pandas(
            profiles([("c1", 20, 10, 50.0), ("c2", 40, 5, 20.0)]), preserve_index=False
        ),
        path,
    )
    assert fs.ingest("customer_profile", str(path)) == 1
    # Same timestamp as c1's first row: written later, so it wins the tie.
    assert fs.ingest("customer_profile", profiles([("c1", 20, 11, 55.0), ("c3", 2, 0, 70.0)])) == 2
    ds_usage = ray.data.from_arrow(
        [usage([("c1", 3, 100), ("c2", 1, 5)]), usage([("c1", 10, 90), ("c3", 8, 7)])]
    )
    assert fs.ingest("customer_usage", ds_usage) == 1

    entities = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c3", "c3", "nobody"],
            "event_timestamp": pd.to_datetime(
                [day(0), day(25), day(0), day(1), day(5), day(0)], utc=True
            ),
            "requested_discount": [5.5, 1.0, 1.0, 7.0, 7.0, 1.0],
            "label": [1, 0, 1, 0, 1, 0],
        }
    )
    feats = [
        "customer_profile:tenure_months",
        "customer_profile:monthly_charges",
        "customer_usage:calls_last_30d",
        "customer_ratios:charges_per_tenure",
        "customer_ratios:discount_share",
    ]
    ds = fs.get_historical_features(entities, feats, num_partitions=3)
    assert ds.feature_versions == {"customer_profile": 2, "customer_usage": 1}
    assert fs.versions_of(ds) == ds.feature_versions
    got = ds.to_pandas().sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)
    assert list(got.columns) == [
        "customer_id",
        "event_timestamp",
        "requested_discount",
        "label",
        "customer_profile__tenure_months",
        "customer_profile__monthly_charges",
        "customer_usage__calls_last_30d",
        "customer_ratios__charges_per_tenure",
        "customer_ratios__discount_share",
    ]
    assert len(got) == 6  # every entity row, matched or not

    def col(name):
        return [None if pd.isna(v) else v for v in got[name]]

    # Rows sorted: c1@day25, c1@day0, c2@day0, c3@day5, c3@day1, nobody.
    # profile (ttl 30d): c1@25 is before c1's rows (day 20) -> null; c1@0 gets the tie winner
    # (11, written last); c2's row is 40 days old -> null; c3@5 is before c3's row (day 2).
    # usage (ttl 7d): c3@5 sees day 8; for c3@1, day 8 is exactly 7 days back -> excluded.
    assert col("customer_profile__tenure_months") == [None, 11, None, None, 0, None]
    assert col("customer_usage__calls_last_30d") == [None, 100, 5, 7, None, None]
    assert col("customer_ratios__charges_per_tenure") == [None, 5.0, None, None, None, None]
    assert col("customer_ratios__discount_share") == [None, 0.1, None, None, 0.1, None]
    assert col("label") == [0, 1, 1, 1, 0, 0]

    # Time travel: version 1 of the profile table has c1's first row (10 months).
    old = fs.get_historical_features(
        entities.iloc[:1],
        ["customer_profile:tenure_months"],
        as_of_versions={"customer_profile": 1},
    )
    assert old.feature_versions == {"customer_profile": 1}
    assert [r["customer_profile__tenure_months"] for r in old.take_all()] == [10]
    with pytest.raises(NotFoundError):
        fs.get_historical_features(
            entities, ["customer_profile:tenure_months"], as_of_versions={"customer_profile": 99}
        )

    # Online: materialise (incremental), read with TTL statuses, on-demand computed identically.
    m = fs.materialize()
    assert {r["view"]: r["to_version"] for r in m} == {"customer_profile": 2, "customer_usage": 1}
    again = fs.materialize("customer_profile")
    assert again[0]["files"] == 0 and again[0]["from_version"] == 2
    rows = fs.get_online_features(
        [
            {"customer_id": "c1", "requested_discount": 5.5},
            {"customer_id": "c2", "requested_discount": 1.0},
            {"customer_id": "nobody", "requested_discount": 1.0},
        ],
        feats,
    )
    c1, c2, nobody = rows
    assert c1["customer_profile__tenure_months"] == 11
    assert c1["customer_usage__calls_last_30d"] == 100
    assert c1["customer_ratios__charges_per_tenure"] == pytest.approx(5.0)
    assert c1["customer_ratios__discount_share"] == pytest.approx(5.5 / 55)
    assert set(c1["_status"].values()) == {"present"}
    assert c2["_status"]["customer_profile__tenure_months"] == "expired"  # 40 days > 30d ttl
    assert c2["customer_profile__tenure_months"] is None
    assert c2["_status"]["customer_usage__calls_last_30d"] == "present"
    assert c2["_status"]["customer_ratios__charges_per_tenure"] == "expired"
    assert set(nobody["_status"].values()) == {"not_found"}
    cols = fs.get_online_features(
        {"customer_id": ["c1"], "requested_discount": [5.5]}, feats[:1], format="columns"
    )
    assert cols["columns"]["customer_profile__tenure_months"] == [11]
    assert cols["status"]["customer_profile__tenure_months"] == ["present"]
    with pytest.raises(SchemaError):
        fs.get_online_features([{"id": "c1"}], feats[:1])

    # Catalog.
    names = {v["name"]: v for v in fs.list_views()}
    assert set(names) == {"customer_profile", "customer_usage", "customer_ratios"}
    assert names["customer_usage"]["ttl"] == "1w"  # 7d, spelt shortest
    d = fs.describe("customer_profile")
    assert d["owner"] == "growth-ml@example.com" and d["tags"]["domain"] == "billing"
    assert d["table"]["version"] == 2 and d["table"]["num_rows"] == 4
    assert d["table"]["last_event_time"].startswith(day(2).date().isoformat())
    assert d["online"]["materialized_version"] == 2 and d["online"]["entities"] == 3
    assert [f["name"] for f in d["definition"]["schema"]][:2] == [
        "tenure_months",
        "monthly_charges",
    ]
    assert "models" in d
    assert fs.table_versions() == {"customer_profile": 2, "customer_usage": 1}


def test_schema_rejections_write_nothing(platform):
    fs = platform.features
    fs.apply(CHURN)
    good = profiles([("c1", 1, 1, 1.0)])
    assert fs.ingest("customer_profile", good) == 1
    before = parquet_files(platform, "customer_profile")
    naive = good.assign(event_timestamp=good["event_timestamp"].dt.tz_localize(None))
    null_key = pa.Table.from_pandas(good, preserve_index=False)
    null_key = null_key.set_column(0, "customer_id", pa.array([None], pa.string()))
    multi_block = ray.data.from_arrow(
        [pa.Table.from_pandas(good, preserve_index=False)] * 3 + [null_key]
    )
    cases = [
        (good.drop(columns=["monthly_charges"]), "monthly_charges", "missing column"),
        (good.assign(tenure_months=["ten"]), "tenure_months", "wrong dtype"),
        (naive, "event_timestamp", "timestamp without timezone"),
        (multi_block, "customer_id", "null join key"),
    ]
    for data, column, rule in cases:
        with pytest.raises(SchemaError) as info:
            fs.ingest("customer_profile", data)
        assert (info.value.view, info.value.column, info.value.rule) == (
            "customer_profile",
            column,
            rule,
        )
        assert fs.table_versions(["customer_profile"]) == {"customer_profile": 1}
        assert parquet_files(platform, "customer_profile") == before
    with pytest.raises(SchemaError):
        fs.push("customer_profile", [{"customer_id": "c9", "event_timestamp": NOW}])
    assert fs.table_versions(["customer_profile"]) == {"customer_profile": 1}


def test_definition_versions_and_incompatible_changes(platform, tmp_path):
    fs = platform.features
    fs.apply(CHURN)
    fs.ingest("customer_usage", usage([("c1", 1, 10)]))
    text = Path(CHURN).read_text()
    changed = tmp_path / "churn.yaml"
    changed.write_text(
        text.replace("ttl: 7d ", "ttl: 14d").replace(
            "      - {name: dropped_call_rate",
            "      - {name: roaming_minutes, dtype: float64}\n      - {name: dropped_call_rate",
        )
    )
    ch = {c["name"]: c for c in fs.apply(str(changed))}
    assert (ch["customer_usage"]["action"], ch["customer_usage"]["version"]) == ("updated", 2)
    assert ch["customer_profile"]["action"] == "unchanged"
    hist = fs.describe("customer_usage")["history"]
    assert [h["version"] for h in hist] == [1, 2] and "roaming_minutes" in hist[1]["detail"]
    # The new feature reads as null for old rows; the old version still reads.
    ds = fs.get_historical_features(
        pd.DataFrame({"customer_id": ["c1"], "event_timestamp": [NOW]}),
        ["customer_usage:roaming_minutes", "customer_usage:calls_last_30d"],
    )
    row = ds.take_all()[0]
    assert row["customer_usage__roaming_minutes"] is None
    assert row["customer_usage__calls_last_30d"] == 10

    broken = tmp_path / "broken.yaml"
    broken.write_text(
        text.replace("{name: calls_last_30d, dtype: int64", "{name: calls_last_30d, dtype: string")
    )
    with pytest.raises(ConflictError, match="calls_last_30d"):
        fs.apply(str(broken))
    assert fs.describe("customer_usage")["version"] == 2
    ch = {c["name"]: c for c in fs.apply(str(broken), force=True)}
    assert ch["customer_usage"]["action"] == "replaced"
    d = fs.describe("customer_usage")
    assert d["table"]["num_rows"] == 0 and d["table"]["version"] >= 3


def test_push_reads_back_and_cli(platform, tmp_path, capsys):
    fs = platform.features
    fs.apply(CHURN)
    v = fs.push(
        "customer_usage",
        [
            {
                "customer_id": "c7",
                "event_timestamp": NOW,
                "calls_last_30d": 3,
                "data_gb_last_30d": 1.0,
                "support_tickets_90d": 0,
                "dropped_call_rate": 0.0,
            }
        ],
    )
    assert v == 1
    row = fs.get_online_features([{"customer_id": "c7"}], ["customer_usage:calls_last_30d"])[0]
    assert row["customer_usage__calls_last_30d"] == 3
    # An older event pushed later does not overwrite the online value...
    fs.push(
        "customer_usage",
        {
            "customer_id": ["c7"],
            "event_timestamp": [day(1)],
            "calls_last_30d": [1],
            "data_gb_last_30d": [0.1],
            "support_tickets_90d": [0],
            "dropped_call_rate": [0.0],
        },
    )
    row = fs.get_online_features([{"customer_id": "c7"}], ["customer_usage:calls_last_30d"])[0]
    assert row["customer_usage__calls_last_30d"] == 3
    # ...but both rows are in the offline table (one source of truth).
    assert fs.describe("customer_usage")["table"]["num_rows"] == 2

    cfg = tmp_path / "platform.yaml"
    cfg.write_text(json.dumps({"storage": {"root": platform.storage.root}}))
    data = tmp_path / "usage.parquet"
    pq.write_table(usage([("c8", 1, 42)]), data)
    base = ["--config", str(cfg)]
    assert cli_main(["features", "apply", CHURN, *base]) == 0
    assert cli_main(["features", "ingest", "customer_usage", str(data), *base]) == 0
    assert cli_main(["features", "materialize", "customer_usage", *base]) == 0
    capsys.readouterr()
    assert (
        cli_main(
            [
                "features",
                "get",
                "customer_usage:calls_last_30d",
                "--entity",
                "customer_id=c8",
                *base,
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out[0]["customer_usage__calls_last_30d"] == 42
    assert cli_main(["features", "list", *base]) == 0
    assert "customer_usage" in capsys.readouterr().out
    assert cli_main(["features", "describe", "customer_usage", *base]) == 0
    text = capsys.readouterr().out
    assert "growth-ml@example.com" in text and "3 rows" in text
    ent = tmp_path / "entities.parquet"
    pq.write_table(
        pa.table(
            {
                "customer_id": ["c8"],
                "event_timestamp": pa.array([NOW], pa.timestamp("us", tz="UTC")),
            }
        ),
        ent,
    )
    outp = tmp_path / "train.parquet"
    assert (
        cli_main(
            [
                "features",
                "get",
                "customer_usage:calls_last_30d",
                "--historical",
                str(ent),
                "--out",
                str(outp),
                *base,
            ]
        )
        == 0
    )
    assert pq.read_table(outp).column("customer_usage__calls_last_30d").to_pylist() == [42]
    assert cli_main(["features", "describe", "nope", *base]) == 1
    assert "not defined" in capsys.readouterr().err


def test_roles_and_tenants(ray_cluster, tmp_path):
    from raymlp._private import cluster as cluster_lib
    from raymlp.client import connect
    from raymlp.config import PlatformConfig
    from raymlp.errors import PermissionDeniedError

    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "auth": {
                "tenants": [{"name": "default"}, {"name": "other"}],
                "principals": [
                    {"name": "alice", "tenant": "default", "roles": ["developer"]},
                    {"name": "bob", "tenant": "default", "roles": ["viewer"]},
                    {"name": "carol", "tenant": "other", "roles": ["developer"]},
                ],
                "default_principal": "alice",
            },
        }
    )
    try:
        alice = connect(config=cfg)
        alice.features.apply(CHURN)
        bob = alice.as_principal(principal="bob")
        carol = alice.as_principal(principal="carol")
        for attempt in (
            lambda: bob.features.apply(CHURN),
            lambda: bob.features.ingest("customer_usage", usage([("c1", 1, 1)])),
            lambda: bob.features.push("customer_usage", usage([("c1", 1, 1)])),
        ):
            with pytest.raises(PermissionDeniedError):
                attempt()
        assert {v["name"] for v in bob.features.list_views()} >= {"customer_usage"}
        assert carol.features.list_views() == []  # another tenant sees nothing
        with pytest.raises(PermissionDeniedError):
            carol.features.describe("customer_usage")
        with pytest.raises(PermissionDeniedError):
            carol.features.get_online_features(
                [{"customer_id": "c1"}], ["customer_usage:calls_last_30d"]
            )
        assert alice.features.table_versions(["customer_usage"]) == {"customer_usage": 0}
        assert parquet_files(alice, "customer_usage") == []
    finally:
        cluster_lib.remove_platform(cfg.ray.namespace, cfg)
