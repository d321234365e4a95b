"""Telling a dead cluster address from a live one in seconds, without starting Ray: the TCP probe,
what ``auto`` resolves to when ``ray_current_cluster`` records a dead cluster, which setting names
the address, and the one-line error for an explicit address that does not answer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raymlp._private import cluster
from raymlp.config import PlatformConfig
from raymlp.errors import UnavailableError
from tests._net import free_port


@pytest.fixture
def listening() -> Iterator[str]:
    """A socket that listens (and never accepts: the kernel completes the handshake)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def closed() -> str:
    """A port nothing listens on: a cluster that died."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def ray_tmp(tmp_path, monkeypatch) -> Path:
    """Ray's default temp dir moved under this test (``$RAY_TMPDIR/ray``); no address set."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    for name in ("RAY_ADDRESS", "RAYMLP_ADDRESS", "RAYMLP_PROBE_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "ray").mkdir()
    return tmp_path / "ray"


def test_a_closed_port_is_dead_at_once(closed):
    t0 = time.monotonic()
    found = cluster.probe(closed, timeout_s=3.0)
    assert time.monotonic() - t0 < 1.0
    assert not found.alive
    assert found.reason == "connection refused"


def test_a_listening_socket_is_alive(listening):
    found = cluster.probe(listening, timeout_s=3.0)
    assert found.alive, found
    assert found.reason == ""


def test_a_ray_client_address_probes_its_host_and_port(listening, closed):
    assert cluster.probe(f"ray://{listening}").alive
    dead = cluster.probe(f"ray://{closed}")
    assert not dead.alive and dead.reason == "connection refused"


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("head.example:6380", ("head.example", 6380)),
        ("[::1]:6379", ("::1", 6379)),
        ("ray://head:10002", ("head", 10002)),
        ("ray://head", ("head", 10001)),  # Ray client's default port
        ("http://127.0.0.1:8265/", ("127.0.0.1", 8265)),
        ("head", None),
        ("head:port", None),
        ("anyscale://cluster", None),
    ],
)
def test_endpoints_of_addresses(address, endpoint):
    assert cluster._host_port(address) == endpoint


def test_an_address_that_is_no_endpoint_is_not_alive_unless_ray_decides():
    assert not cluster.probe("head").alive
    assert cluster.probe("anyscale://cluster").alive  # another scheme: Ray decides


def test_auto_passes_over_a_recorded_cluster_that_is_not_answering(ray_tmp, closed):
    (ray_tmp / "ray_current_cluster").write_text(closed)  # what `ray start` leaves behind
    t0 = time.monotonic()
    found = cluster.find_auto_cluster(timeout_s=3.0)
    assert time.monotonic() - t0 < 5.0
    assert found.address is None
    assert found.stale is not None
    assert closed in found.stale and "ray_current_cluster" in found.stale
    assert "\n" not in found.stale
    # Bypassed, not cleaned: only `ray stop` (or `raymlp down --stop-cluster`) forgets it.
    assert (ray_tmp / "ray_current_cluster").read_text() == closed


def test_auto_joins_a_recorded_cluster_that_answers(ray_tmp, listening):
    (ray_tmp / "ray_current_cluster").write_text(listening + "\n")
    found = cluster.find_auto_cluster(timeout_s=3.0)
    assert found.address == listening
    assert found.stale is None


def _cfg(address: str = "auto") -> PlatformConfig:
    return PlatformConfig.model_validate({"ray": {"address": address}})


def test_which_setting_names_the_address(ray_tmp, monkeypatch):
    assert cluster._requested_address(_cfg(), None) == (
        "auto",
        "ray.address of the platform config",
    )
    assert cluster._requested_address(_cfg("h:1"), None)[0] == "h:1"
    monkeypatch.setenv("RAY_ADDRESS", "ray-env:2")
    # Like Ray, RAY_ADDRESS takes the place of `auto`, wherever `auto` came from ...
    assert cluster._requested_address(_cfg(), None) == ("ray-env:2", "RAY_ADDRESS")
    assert cluster._requested_address(_cfg(), "auto") == ("ray-env:2", "RAY_ADDRESS")
    # ... but not of an address named explicitly.
    assert cluster._requested_address(_cfg(), "arg:3") == ("arg:3", "the address argument")
    assert cluster._requested_address(_cfg(), "local")[0] == "local"
    monkeypatch.setenv("RAYMLP_ADDRESS", "raymlp-env:4")
    assert cluster._requested_address(_cfg(), None) == ("raymlp-env:4", "RAYMLP_ADDRESS")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    monkeypatch.setenv("RAYMLP_ADDRESS", "auto")
    assert cluster._requested_address(_cfg(), None) == ("auto", "RAYMLP_ADDRESS")


def test_an_explicit_dead_address_fails_in_seconds_with_one_line(ray_tmp, closed):
    t0 = time.monotonic()
    with pytest.raises(UnavailableError) as info:
        cluster._join_explicit(closed, "RAY_ADDRESS", {})
    assert time.monotonic() - t0 < 5.0
    message = str(info.value)
    assert "\n" not in message
    assert repr(closed) in message and "RAY_ADDRESS" in message
    assert "connection refused" in message
    assert info.value.address == closed
    assert info.value.source == "RAY_ADDRESS"
    assert info.value.rule.startswith("an explicit Ray address must accept a connection")


def test_the_probe_timeout_is_a_setting(ray_tmp, closed, monkeypatch):
    monkeypatch.setenv("RAYMLP_PROBE_TIMEOUT_S", "1.5")
    with pytest.raises(UnavailableError) as info:
        cluster._join_explicit(closed, "the address argument", {})
    assert "within 1.5 s" in info.value.rule


def test_stopping_a_cluster_forgets_its_record_only(ray_tmp):
    record = ray_tmp / "ray_current_cluster"
    record.write_text("192.0.2.7:6379")
    cluster._forget_recorded_cluster({"192.0.2.8:6379", "127.0.0.1:6379"})
    assert record.read_text() == "192.0.2.7:6379"  # another cluster's record stays
    cluster._forget_recorded_cluster({"192.0.2.7:6379"})
    assert not record.exists()
    cluster._forget_recorded_cluster({"192.0.2.7:6379"})  # nothing recorded: nothing to do
