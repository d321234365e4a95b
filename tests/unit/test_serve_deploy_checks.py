"""`p.serve.deploy` and `jobs.quickstart` refuse a serve config whose service principal the
platform cannot provide — before any Serve replica (or training run) starts."""

from __future__ import annotations

import pytest

from jobs import quickstart
from raymlp._private.credentials import Caller
from raymlp.client import Platform, ServeClient
from raymlp.config import PlatformConfig, hash_api_key
from raymlp.errors import ConfigError


def _auth_platform(tmp_path) -> Platform:
    cfg = PlatformConfig.model_validate({
        "storage": {"root": str(tmp_path / "root")},
        "auth": {"principals": [
            {"name": "alice", "roles": ["developer"], "api_key_sha256": hash_api_key("k")},
            {"name": "serving-svc", "roles": ["viewer"]},
        ]},
    })
    return Platform(cfg, Caller(cfg.auth.by_name("alice"), api_key="k"))


def test_deploy_without_a_service_principal_is_refused_when_auth_is_on(tmp_path):
    client = ServeClient(_auth_platform(tmp_path))
    with pytest.raises(ConfigError) as e:
        client.deploy("configs/serve/churn.yaml")
    assert e.value.context["field"] == "principal"
    assert "principal" in e.value.message


def test_deploy_with_an_unknown_principal_names_it(tmp_path):
    client = ServeClient(_auth_platform(tmp_path))
    cfg = client.load_config("configs/serve/churn.yaml").model_copy(update={"principal": "ghost"})
    with pytest.raises(ConfigError, match="'ghost' is not in platform.yaml"):
        client.deploy(cfg)


def test_a_principal_with_an_api_key_is_not_a_service_principal(tmp_path):
    client = ServeClient(_auth_platform(tmp_path))
    cfg = client.load_config("configs/serve/churn.yaml").model_copy(update={"principal": "alice"})
    with pytest.raises(ConfigError, match="not a service principal") as e:
        client.deploy(cfg)
    assert e.value.context["field"] == "principal"


def test_a_principal_record_is_not_a_credential(tmp_path):
    cfg = _auth_platform(tmp_path).config
    with pytest.raises(TypeError, match="proves nothing"):
        Platform(cfg, cfg.auth.by_name("alice"))  # type: ignore[arg-type]


def test_quickstart_checks_the_serve_principal_before_training(tmp_path):
    p = _auth_platform(tmp_path)
    with pytest.raises(ConfigError):
        quickstart._serve_config(p, "configs/serve/churn.yaml", None)
    cfg = quickstart._serve_config(p, "configs/serve/churn.yaml", "serving-svc")
    assert cfg.principal == "serving-svc" and cfg.name == "churn"


@pytest.mark.parametrize("argv, message", [
    (["--customers", "10"], "--customers must be >= 50"),
    (["--months", "0"], "--months must be within 1..24"),
])
def test_quickstart_rejects_bad_sizes_before_connecting(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        quickstart.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
