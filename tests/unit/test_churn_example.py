"""The curl lines the demo and the quickstart job print are valid shell with valid JSON."""

from __future__ import annotations

import json
import shlex

from raymlp._private.churn_example import EXAMPLE_FEATURES, MODEL, curl_lines


def _args(line: str) -> list[str]:
    return shlex.split(line)


def test_curl_lines_post_entity_and_features_bodies_with_the_key():
    by_entity, by_features, models = curl_lines("http://127.0.0.1:8000", "c000042", "k-1")
    args = _args(by_entity)
    assert args[:5] == ["curl", "-s", "-X", "POST", "http://127.0.0.1:8000/v1/predictions"]
    assert "X-API-Key: k-1" in args
    assert json.loads(args[args.index("-d") + 1]) == {"model_id": MODEL,
                                                      "entity": {"customer_id": "c000042"}}
    args = _args(by_features)
    assert json.loads(args[args.index("-d") + 1]) == {"model_id": MODEL,
                                                      "features": EXAMPLE_FEATURES}
    assert _args(models) == ["curl", "-s", "http://127.0.0.1:8000/v1/models", "-H",
                             "X-API-Key: k-1"]


def test_a_shell_variable_key_is_left_for_the_shell_to_expand():
    line = curl_lines("http://h", "c1", "$RAYMLP_API_KEY")[2]
    assert '-H "X-API-Key: $RAYMLP_API_KEY"' in line
    assert "X-API-Key" not in curl_lines("http://h", "c1")[0]  # auth off: no header
