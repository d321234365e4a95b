"""Which Serve ingress a cluster raymlp starts runs, and the environment that selects it."""

from __future__ import annotations

import itertools
import os

import pytest

from raymlp._private import serve_ingress
from raymlp._private.serve_ingress import (
    apply_env,
    cluster_env,
    ingress_mode,
    merged_env,
    running_ingress,
)
from raymlp.config import HTTPConfig, PlatformConfig
from raymlp.errors import ConfigError
from raymlp.serving.deploy import check_ingress_supports


def _cfg(tmp_path, **ray) -> PlatformConfig:
    return PlatformConfig.model_validate({"storage": {"root": str(tmp_path)}, "ray": ray})


def test_auto_is_haproxy_when_a_binary_is_there_and_http_has_no_tls(tmp_path, monkeypatch):
    monkeypatch.setattr(serve_ingress, "haproxy_binary", lambda: "/bin/haproxy")
    assert ingress_mode(_cfg(tmp_path)) == "haproxy"
    tls = _cfg(tmp_path)
    tls.http = HTTPConfig(ssl_keyfile="k.pem", ssl_certfile="c.pem")
    assert ingress_mode(tls) == "proxy"  # HAProxy ingress is HTTP only
    monkeypatch.setattr(serve_ingress, "haproxy_binary", lambda: None)
    assert ingress_mode(_cfg(tmp_path)) == "proxy"


def test_an_explicit_mode_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(serve_ingress, "haproxy_binary", lambda: None)
    assert ingress_mode(_cfg(tmp_path, serve_ingress="haproxy")) == "haproxy"
    assert ingress_mode(_cfg(tmp_path, serve_ingress="proxy")) == "proxy"


def test_an_unknown_mode_is_refused_naming_the_field(tmp_path):
    with pytest.raises(Exception) as e:
        _cfg(tmp_path, serve_ingress="nginx")
    assert "serve_ingress" in str(e.value) and "nginx" in str(e.value)


def test_the_haproxy_environment_retries_a_dead_replica_and_moves_side_ports():
    ports = itertools.count(41001)
    env = cluster_env("haproxy", free_port=lambda: next(ports))
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HAPROXY_RETRY_ON"] == "conn-failure empty-response"
    assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) < 30
    side = [env[k] for k in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                             "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
                             "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")]
    assert len(set(side)) == 4
    fixed = cluster_env("haproxy")
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in fixed  # Ray's defaults for `raymlp up`
    assert cluster_env("proxy") == {"RAY_SERVE_ENABLE_HA_PROXY": "0"}


def test_the_users_own_setting_wins(monkeypatch):
    monkeypatch.setenv("RAY_SERVE_HAPROXY_RETRY_ON", "conn-failure")
    for name in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"):
        monkeypatch.setenv(name, "-")  # so that monkeypatch restores the variable's absence
        monkeypatch.delenv(name)
    now = apply_env(cluster_env("haproxy"))
    assert now["RAY_SERVE_HAPROXY_RETRY_ON"] == "conn-failure"
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert running_ingress() == "haproxy"


def test_tls_on_a_haproxy_cluster_is_refused_naming_the_field(monkeypatch):
    tls = HTTPConfig(ssl_keyfile="k.pem", ssl_certfile="c.pem")
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    with pytest.raises(ConfigError) as e:
        check_ingress_supports(tls)
    assert e.value.context["field"] == "http.ssl_keyfile"
    assert "HTTP only" in str(e.value)
    check_ingress_supports(HTTPConfig())  # plain HTTP is fine
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    check_ingress_supports(tls)  # the proxy ingress terminates TLS itself


def test_a_later_start_replaces_what_raymlp_set_and_empty_counts_as_unset(monkeypatch):
    for name in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_RETRY_ON",
                 "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"):
        monkeypatch.setenv(name, "-")
        monkeypatch.delenv(name)
    monkeypatch.setattr(serve_ingress, "_SET_HERE", {})
    apply_env(cluster_env("haproxy"))
    assert running_ingress() == "haproxy"
    apply_env(cluster_env("proxy"))  # raymlp's own earlier value is not a user setting
    assert running_ingress() == "proxy"
    monkeypatch.setenv("RAY_SERVE_HAPROXY_RETRY_ON", "")
    merged = merged_env(cluster_env("haproxy"), {"RAY_SERVE_HAPROXY_RETRY_ON": "", "X": "1"})
    assert merged["RAY_SERVE_HAPROXY_RETRY_ON"] == "conn-failure empty-response"
    assert merged["X"] == "1"
    monkeypatch.setattr(serve_ingress, "_SET_HERE", {})  # a process where raymlp set nothing
    assert merged_env(cluster_env("haproxy"), {"RAY_SERVE_ENABLE_HA_PROXY": "0"})[
        "RAY_SERVE_ENABLE_HA_PROXY"
    ] == "0"  # the user's own choice wins
