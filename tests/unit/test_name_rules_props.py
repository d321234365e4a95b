"""Property tests of the naming rules: every name is checked as a full match.

For each rule (platform names, model names, aliases, registry keys, feature object and column
names): a generated valid name passes and round-trips through its config model; the same name
with a trailing newline, with a control character anywhere, or one character too long is
refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raymlp.config import (
    ALIAS_RE,
    MODEL_NAME_RE,
    NAME_RE,
    Entity,
    FeatureField,
    FeatureView,
    Principal,
    Tenant,
)
from raymlp.config._base import full_match
from raymlp.errors import ValidationError
from raymlp.registry import names

CONTROL = st.characters(categories=["Cc"])  # \x00-\x1f, \x7f-\x9f: newline, tab, NUL, ...


def _refuses(check: Callable[[str], Any], value: str) -> bool:
    try:
        check(value)
    except (ValidationError, ValueError):  # pydantic's ValidationError is a ValueError
        return True
    return False


def _principal(v: str) -> str:
    return Principal(name=v).name


def _tenant(v: str) -> str:
    return Tenant(name=v).name


def _entity(v: str) -> str:
    e = Entity(name=v, join_keys=["k"])
    return Entity.model_validate(e.model_dump()).name


def _column(v: str) -> str:
    f = FeatureField(name=v, dtype="int64")
    return FeatureField.model_validate(f.model_dump()).name


def _view(v: str) -> str:
    fv = FeatureView(name=v, entities=["e"], schema=[{"name": "x", "dtype": "int64"}])
    return FeatureView.model_validate(fv.model_dump(by_alias=True)).name


def _key(v: str) -> str:
    return names.check_key(v, "params")


# (check, strategy of valid names, max length)
RULES: dict[str, tuple[Callable[[str], Any], st.SearchStrategy[str], int]] = {
    "principal": (_principal, st.from_regex(NAME_RE, fullmatch=True), 63),
    "tenant": (_tenant, st.from_regex(NAME_RE, fullmatch=True), 63),
    "model": (names.check_model_name, st.from_regex(MODEL_NAME_RE, fullmatch=True), 128),
    "experiment": (
        names.check_experiment_name,
        st.from_regex(MODEL_NAME_RE, fullmatch=True),
        128,
    ),
    "alias": (names.check_alias, st.from_regex(ALIAS_RE, fullmatch=True), 63),
    "registry key": (_key, st.from_regex(r"\A[A-Za-z0-9_.\-/ :]{1,250}\Z", fullmatch=True), 250),
    "entity": (
        _entity,
        st.from_regex(r"\A[a-z][a-z0-9_]{0,62}\Z", fullmatch=True).filter(lambda s: "__" not in s),
        63,
    ),
    "feature view": (
        _view,
        st.from_regex(r"\A[a-z][a-z0-9_]{0,62}\Z", fullmatch=True).filter(lambda s: "__" not in s),
        63,
    ),
    "column": (
        _column,
        st.from_regex(r"\A[A-Za-z][A-Za-z0-9_]{0,127}\Z", fullmatch=True).filter(
            lambda s: "__" not in s
        ),
        128,
    ),
}
PARAMS = pytest.mark.parametrize("rule", sorted(RULES))


@PARAMS
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_valid_names_pass_and_round_trip(rule, data):
    check, valid, _ = RULES[rule]
    name = data.draw(valid)
    assert check(name) == name


@PARAMS
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_trailing_newline_is_refused(rule, data):
    check, valid, _ = RULES[rule]
    name = data.draw(valid)
    assert _refuses(check, name + "\n"), f"{rule}: {name!r} + newline passed"


@PARAMS
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_control_character_anywhere_is_refused(rule, data):
    check, valid, _ = RULES[rule]
    name = data.draw(valid)
    pos = data.draw(st.integers(0, len(name)))
    bad = name[:pos] + data.draw(CONTROL) + name[pos:]
    assert _refuses(check, bad), f"{rule}: {bad!r} passed"


@PARAMS
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_over_length_is_refused(rule, data):
    check, valid, limit = RULES[rule]
    name = data.draw(valid)
    fill = name[-1] if name[-1] not in "_" else "a"
    long = (name + fill * limit)[: limit + data.draw(st.integers(1, 5))]
    assert _refuses(check, long), f"{rule}: {len(long)} chars passed"


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_full_match_agrees_with_re_fullmatch(text):
    for pattern in (NAME_RE, MODEL_NAME_RE, ALIAS_RE):
        # With \A...\Z, a prefix-anchored .match can never accept more than fullmatch does.
        assert full_match(pattern, text) == (re.fullmatch(pattern, text) is not None)
        assert (pattern.match(text) is not None) == full_match(pattern, text)


def test_non_strings_are_refused():
    for value in (None, 3, b"abc", ["abc"]):
        assert not full_match(NAME_RE, value)
        assert _refuses(names.check_model_name, value)  # type: ignore[arg-type]
