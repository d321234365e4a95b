"""The error tree: codes, HTTP statuses, context, pickling."""

from __future__ import annotations

import pickle

import pytest

from raymlp import errors
from raymlp.errors import (
    ConfigError,
    NotFoundError,
    RayMLPError,
    SchemaError,
    ValidationError,
    error_for_code,
    unwrap_ray_error,
)

ALL = [getattr(errors, name) for name in errors.__all__ if name[0].isupper()]


@pytest.mark.parametrize("cls", ALL)
def test_every_error_pickles_with_type_and_context(cls):
    err = cls("something is off", field="a.b", value=[1, 2], rule="> 0")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert back.message == "something is off"
    assert back.context == {"field": "a.b", "value": [1, 2], "rule": "> 0"}
    assert back.field == "a.b"
    assert isinstance(back, RayMLPError)


@pytest.mark.parametrize("cls", ALL)
def test_every_error_has_a_distinct_code_and_an_http_status(cls):
    assert 400 <= cls.http_status < 600
    assert error_for_code(cls.code) is cls


def test_http_mapping_matches_the_api_contract():
    assert errors.BadRequestError.http_status == 400
    assert errors.AuthenticationError.http_status == 401
    assert errors.PermissionDeniedError.http_status == 403
    assert NotFoundError.http_status == 404
    assert ValidationError.http_status == 422
    assert SchemaError.http_status == 422
    assert errors.OverloadedError.http_status == 429
    assert errors.UnavailableError.http_status == 503
    assert issubclass(SchemaError, ValidationError)


def test_error_body_is_json_ready():
    body = ConfigError("bad", file="p.yaml", field="x", obj=object()).to_dict()
    assert body["error"]["code"] == "config_error"
    assert body["error"]["details"]["file"] == "p.yaml"
    assert isinstance(body["error"]["details"]["obj"], str)


def test_missing_context_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        _ = NotFoundError("x").field


def test_unwrap_finds_the_cause():
    class Wrapper(Exception):
        def __init__(self, cause):
            super().__init__("wrapped")
            self.cause = cause

    inner = NotFoundError("gone", kind="model", name="m")
    assert unwrap_ray_error(Wrapper(inner)) is inner
    plain = ValueError("x")
    assert unwrap_ray_error(plain) is plain
