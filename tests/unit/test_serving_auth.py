"""API keys → principal and tenant (401/403), and the request schemas."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as PydanticValidationError

from raymlp.config import AuthConfig, hash_api_key
from raymlp.errors import AuthenticationError, PermissionDeniedError
from raymlp.serving.auth import LOCAL_ADMIN, Authenticator, api_key_from_headers
from raymlp.serving.schemas import (
    BatchPredictionRequest,
    FeedbackRequest,
    PredictionRequest,
)

AUTH = AuthConfig.model_validate(
    {
        "tenants": [{"name": "acme"}, {"name": "globex"}],
        "principals": [
            {
                "name": "alice",
                "tenant": "acme",
                "roles": ["viewer"],
                "api_key_sha256": hash_api_key("key-alice"),
            },
            {
                "name": "root",
                "tenant": "acme",
                "roles": ["admin"],
                "api_key_sha256": hash_api_key("key-root"),
            },
        ],
    }
)


def test_keys_from_either_header():
    assert api_key_from_headers({"authorization": "Bearer k1"}) == "k1"
    assert api_key_from_headers({"x-api-key": " k2 "}) == "k2"
    assert api_key_from_headers({"authorization": "Basic abc"}) is None
    assert api_key_from_headers({}) is None


def test_authentication():
    auth = Authenticator(AUTH)
    assert auth.authenticate({"x-api-key": "key-alice"}).name == "alice"
    with pytest.raises(AuthenticationError) as e:
        auth.authenticate({})
    assert e.value.http_status == 401
    with pytest.raises(AuthenticationError):
        auth.authenticate({"authorization": "Bearer wrong"})


def test_tenant_isolation():
    auth = Authenticator(AUTH)
    alice = auth.authenticate({"x-api-key": "key-alice"})
    root = auth.authenticate({"x-api-key": "key-root"})
    auth.check_tenant(alice, "m", "acme")
    with pytest.raises(PermissionDeniedError) as e:
        auth.check_tenant(alice, "m", "globex")
    assert e.value.http_status == 403
    auth.check_tenant(root, "m", "globex")  # admins see every tenant


def test_auth_off_means_local_admin():
    auth = Authenticator(AuthConfig())
    assert auth.authenticate({}) is LOCAL_ADMIN


def test_request_schemas():
    r = PredictionRequest.model_validate({"model_id": "m", "features": {"x": 1}, "version": 2})
    assert r.version == 2
    PredictionRequest.model_validate({"model_id": "m", "entity": {"customer_id": "c1"}})
    for bad in (
        {"model_id": "m"},
        {"model_id": "m", "entity": {}},
        {"model_id": "m", "features": {}, "version": 0},
        {"model_id": "m", "features": {}, "extra": 1},
        {"features": {}},
    ):
        with pytest.raises(PydanticValidationError):
            PredictionRequest.model_validate(bad)
    b = BatchPredictionRequest.model_validate(
        {"model_id": "m", "instances": [{"features": {"x": 1}}, {"entity": {"id": 3}}]}
    )
    assert len(b.instances) == 2
    with pytest.raises(PydanticValidationError):
        BatchPredictionRequest.model_validate({"model_id": "m", "instances": []})
    assert FeedbackRequest.model_validate({"request_id": "r", "label": 1}).label == 1
