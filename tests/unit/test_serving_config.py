"""The serve config: validation naming the field, the shipped churn.yaml, deployment options
sized to the batch, and a generated Serve config that Serve's own schema accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raymlp.config import HTTPConfig, ServeAppConfig, load_config, load_serve_config
from raymlp.errors import ConfigError
from raymlp.serving.app import deployment_options, http_options, serve_config

ROOT = Path(__file__).resolve().parents[2]
MIN = {"models": [{"name": "customer-churn"}]}


def bad(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(ServeAppConfig, data, "serve.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"models": []}, "models"),
        ({"models": [{"name": "m"}, {"name": "m"}]}, "listed twice"),
        ({"models": [{"name": "Bad Name"}]}, "models.0.name"),
        ({"models": [{"name": "m", "alias": "9x"}]}, "models.0.alias"),
        ({"models": [{"name": "m", "features": ["no_colon"]}]}, "view:feature"),
        ({"models": [{"name": "m", "fallback_model": {"name": "fb"}}]}, "exactly one of version"),
        (
            {"model_server": {"batching": {"max_batch_size": 0}}},
            "model_server.batching.max_batch_size",
        ),
        (
            {"model_server": {"num_replicas": 2, "autoscaling": {"max_replicas": 3}}},
            "a fixed count or autoscaling",
        ),
        ({"model_server": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}}, "min_replicas"),
        ({"breaker": {"failure_rate": 1.5}}, "breaker.failure_rate"),
        ({"canary_steps": [50, 25]}, "strictly increasing"),
        ({"route_prefix": "api/"}, "route_prefix"),
        ({"gateway": {"routing_header": "X Key"}}, "routing_header"),
        ({"cache": {"ttl": "soon"}}, "cache.ttl"),
        ({"surprise": 1}, "unknown key 'surprise'"),
        ({"http": {"ssl_keyfile": "k.pem"}}, "ssl_certfile"),
    ],
)
def test_bad_configs_name_the_field(patch, needle):
    assert needle in bad({**MIN, **patch})


def test_shipped_churn_config_loads():
    cfg = load_serve_config(ROOT / "configs/serve/churn.yaml")
    assert cfg.model("customer-churn").entity_keys == ["customer_id"]
    assert cfg.model_server.autoscaling.max_replicas == 2
    assert cfg.cache.ttl.total_seconds() == 60
    assert cfg.model("nope") is None


def test_max_ongoing_requests_is_sized_to_the_batch():
    cfg = load_config(
        ServeAppConfig,
        {
            **MIN,
            "model_server": {
                "batching": {"max_batch_size": 48},
                "autoscaling": {"min_replicas": 1, "max_replicas": 3},
            },
        },
    )
    s = cfg.model_server
    assert s.sized_max_ongoing_requests() == 96
    opts = deployment_options(s, s.sized_max_ongoing_requests(), 48.0)
    assert opts["max_ongoing_requests"] == 96  # never Serve's default of 5
    assert opts["autoscaling_config"]["target_ongoing_requests"] == 48.0
    assert opts["autoscaling_config"]["max_replicas"] == 3
    assert "num_replicas" not in opts
    fixed = deployment_options(cfg.fallback_server, 16, 16.0)
    assert fixed["num_replicas"] == 1 and fixed["max_queued_requests"] == -1
    shed = load_config(ServeAppConfig, {**MIN, "model_server": {"max_queued_requests": 10}})
    o = deployment_options(shed.model_server, 64, 32.0)
    assert o["max_queued_requests"] == 10 and o["backpressure_config"]["status_code"] == 429


def test_tls_goes_to_serve_http_options():
    http = HTTPConfig(ssl_keyfile="/k.pem", ssl_certfile="/c.pem", port=8443)
    assert http_options(http) == {
        "host": "127.0.0.1",
        "port": 8443,
        "ssl_keyfile": "/k.pem",
        "ssl_certfile": "/c.pem",
    }


def test_generated_serve_config_is_valid_for_serve_deploy():
    from ray.serve.schema import ServeDeploySchema

    cfg = load_serve_config(ROOT / "configs/serve/churn.yaml")
    doc = yaml.safe_load(yaml.safe_dump(serve_config(cfg, HTTPConfig(port=8011))))
    schema = ServeDeploySchema.model_validate(doc)
    app = schema.applications[0]
    assert app.import_path == "raymlp.serving.app:app_builder"
    assert schema.http_options.port == 8011
    # the embedded config round-trips to the same application; batching rides as user_config
    # (so editing it and re-running `serve deploy` reconfigures replicas in place)
    embedded = ServeAppConfig.model_validate(app.args["config"])
    assert embedded.model_dump(
        exclude={"model_server": {"batching"}, "fallback_server": {"batching"}}
    ) == cfg.model_dump(exclude={"model_server": {"batching"}, "fallback_server": {"batching"}})
    user = {d.name: d.user_config for d in app.deployments}
    assert user["ModelServer"] == cfg.model_server.batching.model_dump(mode="json")
    assert user["FallbackServer"]["max_batch_size"] == 16


def test_app_builder_builds_from_args():
    from raymlp.serving.app import app_builder

    cfg = load_serve_config(ROOT / "configs/serve/churn.yaml")
    app = app_builder({"config": cfg.model_dump(mode="json")})
    assert type(app).__name__ == "Application"
    with pytest.raises(ConfigError):
        app_builder({"config": {"models": []}})
    with pytest.raises(ConfigError):
        app_builder({})
