"""Threat: a driver calls the feature store actor directly with a made-up identity (issue 13
item 2): "the feature store ... treat[s] a missing principal as admin and accept[s]
caller-supplied role lists".

A raw actor handle from this driver, auth on: a principal dict naming roles, a name without a
credential, or no principal at all are refused (AuthenticationError) for writes (push, commit,
apply) and reads; nothing was written (table version, data files, definitions, online values).
"""

from __future__ import annotations

import json

import pytest
import ray

from raymlp.errors import AuthenticationError
from tests.security._features import REPO, as_, auth_config, online, parquet_files, usage_rows


@pytest.fixture
def platform_config(tmp_path):
    return auth_config(str(tmp_path / "root"))


def test_a_raw_actor_handle_with_a_made_up_identity_is_refused(platform):
    alice = as_(platform, "alice")
    alice.features.apply(REPO)
    alice.features.push("usage", usage_rows([("c1", 1, 10, 50.0)]))
    before = (
        alice.features.table_versions(["usage"]),
        parquet_files(alice, "usage"),
        online(alice, ["c1"]),
        json.dumps(alice.features.registry().to_dict(), sort_keys=True),
    )
    actor = ray.get_actor("feature_store", namespace=alice.config.ray.namespace)
    forged = [
        {"name": "x", "roles": ["admin"], "tenant": "default"},  # a role list: not believed
        {"name": "alice"},  # a name is never a credential
        {"name": "alice", "api_key": "guessed"},
        None,  # no principal is not "admin"
    ]
    rows = usage_rows([("c1", 0, 999, 1.0)])
    evil = {**REPO, "entities": [{"name": "customer", "join_keys": ["account_id"]}]}
    for cred in forged:
        attempts = {
            "push": lambda c=cred: actor.push.remote("usage", rows, c),
            "apply": lambda c=cred: actor.apply.remote(evil, True, c),
            "commit_files": lambda c=cred: actor.commit_files.remote("usage", [], "t", c),
            "online_read": lambda c=cred: actor.online_read.remote(
                c, [["c1"]], [("usage", ["calls"], 0)]
            ),
            "definitions": lambda c=cred: actor.definitions.remote(c),
        }
        for what, attempt in attempts.items():
            try:
                ray.get(attempt())
            except AuthenticationError:
                continue
            pytest.fail(f"{what} with credential {cred!r} was accepted")
    after = (
        alice.features.table_versions(["usage"]),
        parquet_files(alice, "usage"),
        online(alice, ["c1"]),
        json.dumps(alice.features.registry().to_dict(), sort_keys=True),
    )
    assert after == before
    assert after[2] == [("c1", 10, "present")]
