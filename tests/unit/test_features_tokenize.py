"""Tokenization of sensitive data: keyed tokens, where the key comes from, and the lookups."""

from __future__ import annotations

import hashlib
import hmac
import threading

import pyarrow as pa
import pytest

from raymlp.config import Entity, FeatureRepo, OnDemandFeatureView, PlatformConfig, load_config
from raymlp.config._base import hash_api_key
from raymlp.errors import AuthenticationError, ConfigError, ValidationError
from raymlp.features import tokenize
from raymlp.features.definitions import FeatureRegistry
from raymlp.features.lookup import OnlinePlan, entity_keys, route
from raymlp.features.tokenize import KEY_PATH, TOKEN_LABEL, Tokenizer, is_token
from raymlp.storage import Storage

KEY = b"k" * 32


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.setattr(tokenize, "_CACHE", {})
    monkeypatch.delenv("RAYMLP_PLATFORM_SECRET", raising=False)


def test_tokens_are_keyed_hmacs_deterministic_and_idempotent():
    tok = Tokenizer(KEY)
    t = tok.token("4111-1111-1111-1111")
    assert t == "tok_" + hmac.new(KEY, b"4111-1111-1111-1111", hashlib.sha256).hexdigest()
    assert is_token(t) and not is_token("4111") and not is_token(t + "\n")
    assert tok.token(t) == t  # a token is never tokenized twice
    assert Tokenizer(b"j" * 32).token("4111-1111-1111-1111") != t  # another key, another token
    assert "4111" not in t and "4111" not in repr(tok)


def test_tokenize_table_replaces_only_the_named_columns_and_keeps_nulls():
    tok = Tokenizer(KEY)
    table = pa.table(
        {
            "card": pa.array(["a", "b", "a", None]),
            "email": pa.array(["x@y", None, "x@y", "z@w"]).dictionary_encode(),
            "n": [1, 2, 3, 4],
        }
    )
    out = tok.tokenize_table(table, ["card", "email", "absent"])
    assert out.column("n").to_pylist() == [1, 2, 3, 4]
    card = out.column("card").to_pylist()
    assert card[0] == card[2] == tok.token("a") and card[1] == tok.token("b") and card[3] is None
    assert out.column("email").to_pylist() == [
        tok.token("x@y"),
        None,
        tok.token("x@y"),
        tok.token("z@w"),
    ]
    assert out.schema.field("email").type == pa.string()


def _cfg(tmp_path, **auth) -> PlatformConfig:
    return PlatformConfig.model_validate(
        {"storage": {"root": str(tmp_path / "root")}, "auth": auth}
    )


def test_the_key_derives_from_the_platform_secret_with_a_distinct_label(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYMLP_PLATFORM_SECRET", "s3cret")
    tok = Tokenizer.from_config(_cfg(tmp_path))
    derived = hmac.new(b"s3cret", TOKEN_LABEL, hashlib.sha256).digest()
    assert tok.token("v") == Tokenizer(derived).token("v")
    assert derived != b"s3cret"
    assert not Storage(str(tmp_path / "root")).exists(KEY_PATH)  # no key file with a secret


def test_without_a_secret_and_auth_off_a_key_file_is_created_once(tmp_path):
    cfg = _cfg(tmp_path)
    results: list[str] = []

    def make() -> None:
        tokenize._CACHE.clear()  # every thread goes to storage
        results.append(Tokenizer.from_config(cfg).token("v"))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1  # racing creators agree on one key
    path = Storage(cfg.storage.root).local_path(KEY_PATH)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["tokenize.key"]  # no temp files left
    # An existing key file wins, also once a secret exists (tokens must stay stable).
    tokenize._CACHE.clear()
    key = bytes.fromhex(path.read_text())
    assert Tokenizer.from_config(cfg).token("v") == Tokenizer(key).token("v") == results[0]


def test_auth_on_without_a_readable_secret_has_no_key(tmp_path):
    cfg = _cfg(
        tmp_path,
        principals=[{"name": "alice", "roles": ["developer"], "api_key_sha256": hash_api_key("k")}],
    )
    with pytest.raises(AuthenticationError, match="platform secret is not readable"):
        Tokenizer.from_config(cfg)


def test_sensitive_needs_strings_and_stored_objects():
    with pytest.raises(ConfigError, match="sensitive join keys are strings"):
        load_config(
            FeatureRepo,
            {
                "entities": [
                    {"name": "c", "join_keys": ["id"], "value_type": "int64", "sensitive": True}
                ]
            },
        )
    with pytest.raises(ConfigError, match="sensitive features are strings"):
        load_config(
            FeatureRepo,
            {
                "entities": [{"name": "c", "join_keys": ["id"]}],
                "feature_views": [
                    {
                        "name": "v",
                        "entities": ["c"],
                        "schema": [{"name": "n", "dtype": "int64", "sensitive": True}],
                    }
                ],
            },
        )
    with pytest.raises(ValueError, match="an on-demand view stores nothing"):
        OnDemandFeatureView(
            name="o",
            sources=["v:n"],
            udf="m:f",
            schema=[{"name": "x", "dtype": "string", "sensitive": True}],
        )
    assert Entity(name="c", join_keys=["id"]).sensitive is False


def _registry() -> FeatureRegistry:
    repo = load_config(
        FeatureRepo,
        {
            "entities": [{"name": "card", "join_keys": ["card_number"], "sensitive": True}],
            "feature_views": [
                {
                    "name": "spend",
                    "entities": ["card"],
                    "schema": [
                        {"name": "total", "dtype": "float64"},
                        {"name": "email", "dtype": "string", "sensitive": True},
                    ],
                }
            ],
        },
    )
    reg = FeatureRegistry().plan_apply(repo, applied_by="a").registry
    assert "sensitive" not in reg.record("feature_view", "spend")["definition"]["schema"][0]
    return reg


def test_lookups_send_tokens_and_return_the_callers_raw_keys():
    reg = _registry()
    assert reg.sensitive_columns("spend") == ["card_number", "email"]
    tok = Tokenizer(KEY)
    plan = OnlinePlan(reg, ("spend:total",), tokenizer=tok)
    key_cols, key_sets = entity_keys(plan, [{"card_number": "4111"}, {"card_number": "5500"}])
    assert key_cols == {"card_number": ["4111", "5500"]}
    assert key_sets == [[tok.token("4111"), tok.token("5500")]]
    # Sharded routing hashes the stored key: without a tokenizer it would ask the wrong shard.
    bare = OnlinePlan(reg, ("spend:total",))
    _, raw_sets = entity_keys(bare, [{"card_number": "4111"}])
    assert raw_sets == [["4111"]]  # the actor tokenizes these itself
    with pytest.raises(ValidationError, match="sensitive"):
        route(bare, raw_sets, 2)
    assert len(route(plan, key_sets, 2)) == 2
