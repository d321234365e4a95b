"""Threat: sensitive values land raw in the feature store (issue 13 item 9).

A card entity marked ``sensitive: true`` and an e-mail feature marked ``sensitive: true``: rows
are ingested (Ray Data pipeline) and pushed (the actor) with raw values; then the Delta table is
read directly with deltalake/pyarrow, and every file under the table is searched byte by byte:
no raw value appears anywhere, only ``tok_<hex>`` tokens. Lookups still work by raw value:
online (the SDK and a raw actor call without tokens) and point-in-time historical retrieval.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest
import ray
from deltalake import DeltaTable

from raymlp.features.tokenize import Tokenizer, is_token
from tests.security._features import NOW, as_, auth_config

CARDS = ["4111111111111111", "5500005555555559"]
EMAILS = ["ann@example.com", "bo@example.org"]
PUSHED_CARD, PUSHED_EMAIL = "340000000000009", "cy@example.net"
REPO = {
    "entities": [{"name": "card", "join_keys": ["card_number"], "sensitive": True}],
    "feature_views": [
        {
            "name": "card_spend",
            "entities": ["card"],
            "ttl": "30d",
            "schema": [
                {"name": "spend", "dtype": "float64"},
                {"name": "email", "dtype": "string", "sensitive": True},
            ],
        }
    ],
}


@pytest.fixture
def platform_config(tmp_path):
    return auth_config(str(tmp_path / "root"))


def _rows(cards, emails, spend, days) -> pa.Table:
    return pa.table(
        {
            "card_number": cards,
            "event_timestamp": pa.array(
                [NOW - timedelta(days=d) for d in days], pa.timestamp("us", tz="UTC")
            ),
            "spend": pa.array(spend, pa.float64()),
            "email": emails,
        }
    )


def test_sensitive_keys_and_features_never_land_raw_and_lookups_work(platform):
    alice = as_(platform, "alice")
    fs = alice.features
    fs.apply(REPO)
    fs.ingest("card_spend", _rows(CARDS, EMAILS, [10.0, 20.0], [3, 3]))
    fs.push("card_spend", _rows([PUSHED_CARD], [PUSHED_EMAIL], [30.0], [1]))
    raw = [*CARDS, *EMAILS, PUSHED_CARD, PUSHED_EMAIL]

    # The Delta table, read directly: only tokens in the sensitive columns.
    uri = str(alice.storage.local_path("features", "card_spend"))
    table = DeltaTable(uri).to_pyarrow_table()
    assert table.num_rows == 3
    for col in ("card_number", "email"):
        values = table.column(col).to_pylist()
        assert all(is_token(v) for v in values), (col, values)
    # Every byte of every file under the table (data files, log, checkpoints) and of the
    # registry snapshots: no raw value anywhere.
    files = [p for p in alice.storage.local_path("features").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    for path in files:
        data = path.read_bytes()
        for value in raw:
            assert value.encode() not in data, (value, path)

    # The tokens are the platform's keyed tokens of the raw values.
    tok = Tokenizer.from_config(alice.config)
    stored = dict(zip(table.column("card_number").to_pylist(), table.column("spend").to_pylist()))
    assert stored == {
        tok.token(CARDS[0]): 10.0,
        tok.token(CARDS[1]): 20.0,
        tok.token(PUSHED_CARD): 30.0,
    }

    # Online lookup by raw value (after materialising the ingested rows).
    fs.materialize("card_spend")
    rows = fs.get_online_features(
        [{"card_number": c} for c in [*CARDS, PUSHED_CARD, "0000"]],
        ["card_spend:spend", "card_spend:email"],
    )
    assert [r["card_number"] for r in rows] == [*CARDS, PUSHED_CARD, "0000"]  # as sent
    assert [r["card_spend__spend"] for r in rows] == [10.0, 20.0, 30.0, None]
    assert [r["_status"]["card_spend__spend"] for r in rows][-1] == "not_found"
    assert rows[0]["card_spend__email"] == tok.token(EMAILS[0])  # features come back tokenized

    # A raw actor call with raw keys (what a caller without the tokenizer sends) works too:
    # the actor tokenizes before reading.
    actor = ray.get_actor("feature_store", namespace=alice.config.ray.namespace)
    reply = ray.get(
        actor.online_read.remote(alice.caller.wire(), [[CARDS[1]]], [("card_spend", ["spend"], 0)])
    )
    assert reply["views"]["card_spend"][1]["spend"] == [20.0]

    # Point-in-time historical retrieval by raw value.
    entities = pd.DataFrame(
        {
            "card_number": [CARDS[0], CARDS[1], PUSHED_CARD, CARDS[0]],
            "event_timestamp": pd.to_datetime([NOW, NOW, NOW, NOW - timedelta(days=5)], utc=True),
            "label": [1, 0, 1, 0],
        }
    )
    got = fs.get_historical_features(entities, ["card_spend:spend"]).to_pandas()
    by_label_and_token = {
        (r.card_number, r.label): r.card_spend__spend for r in got.itertuples(index=False)
    }
    assert by_label_and_token[(tok.token(CARDS[0]), 1)] == 10.0
    assert by_label_and_token[(tok.token(CARDS[1]), 0)] == 20.0
    assert by_label_and_token[(tok.token(PUSHED_CARD), 1)] == 30.0
    assert pd.isna(by_label_and_token[(tok.token(CARDS[0]), 0)])  # before the row's time
    assert not set(got["card_number"]) & set(raw)  # the training set carries tokens only
