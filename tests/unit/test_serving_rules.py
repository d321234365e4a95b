"""Rule-based fallback answers."""

from __future__ import annotations

import pytest

from raymlp.config import FallbackRule, ServedModelConfig, load_config
from raymlp.errors import ConfigError
from raymlp.serving.rules import condition_holds, match_rule

RULES = [
    FallbackRule(
        name="new-monthly",
        when={"tenure_months": {"lt": 6}, "contract": "month-to-month"},
        prediction="churn",
        probability=0.8,
    ),
    FallbackRule(
        name="loyal",
        when={"tenure_months": {"ge": 24, "le": 120}},
        prediction="stay",
        probability=0.1,
    ),
    FallbackRule(name="unknown-contract", when={"contract": {"is_null": True}}, prediction="stay"),
]


@pytest.mark.parametrize(
    "features,expected",
    [
        ({"tenure_months": 2, "contract": "month-to-month"}, "new-monthly"),
        ({"tenure_months": 2, "contract": "two-year"}, None),
        ({"tenure_months": 30, "contract": "two-year"}, "loyal"),
        ({"tenure_months": 500, "contract": "two-year"}, None),
        ({"tenure_months": 10}, "unknown-contract"),
        ({"tenure_months": None, "contract": "month-to-month"}, None),
        ({"tenure_months": "2", "contract": "month-to-month"}, None),  # not a number: no match
        ({}, "unknown-contract"),
    ],
)
def test_first_matching_rule_answers(features, expected):
    rule = match_rule(RULES, features)
    assert (rule.name if rule else None) == expected


def test_operators():
    assert condition_holds({"in": ["a", "b"]}, "a") and not condition_holds({"in": ["a"]}, "c")
    assert condition_holds({"not_in": ["a"]}, "c")
    assert condition_holds({"ne": 3}, 4) and not condition_holds({"ne": 3}, 3)
    assert condition_holds({"gt": 1, "lt": 3}, 2.5)
    assert condition_holds({"is_null": False}, 0)
    assert not condition_holds({"gt": 1}, True)  # booleans are not numbers here
    assert condition_holds(5, 5) and not condition_holds(5, 6)
    assert match_rule([FallbackRule(name="any", prediction="x")], None).name == "any"


@pytest.mark.parametrize(
    "when,needle",
    [
        ({"x": {"between": [1, 2]}}, "unknown operator 'between'"),
        ({"x": {"in": "abc"}}, "rule: a list"),
        ({"x": {"lt": "5"}}, "rule: a number"),
        ({"x": {"is_null": "yes"}}, "true|false"),
        ({"x": {}}, "at least one operator"),
    ],
)
def test_bad_rules_fail_at_load_naming_the_field(when, needle):
    with pytest.raises(ConfigError) as e:
        load_config(
            ServedModelConfig,
            {"name": "m", "rules": [{"name": "r", "when": when, "prediction": "p"}]},
            "serve.yaml",
        )
    assert needle in str(e.value)
    assert "rules.0.when" in str(e.value)
