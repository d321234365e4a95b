"""`raymlp up && raymlp status && raymlp down` as a user types them, against a local cluster that
`up` starts and against one started beforehand with `ray start --head`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from actors import available_specs
from tests.e2e.conftest import private_ray_tmp

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    # Outside 10002-19999, which Ray keeps for worker processes.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


def raymlp(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raymlp", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    cfg = tmp_path / "platform.yaml"
    cfg.write_text(f"storage: {{root: {tmp_path / 'root'}}}\n")
    e = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYMLP_ADDRESS")}
    e["RAYMLP_CONFIG"] = str(cfg)
    return e


def _expected_actors(status: dict) -> None:
    rows = {r["actor"]: r for r in status["actors"]}
    for spec in available_specs():
        assert rows[spec.name]["state"] == "ALIVE", rows
        assert rows[spec.name]["node"] != "-"


def test_up_starts_a_local_cluster_then_status_and_down(env):
    up = raymlp("up", "--address", "local", env=env)
    assert up.returncode == 0, up.stderr
    address = re.search(r"Ray address: (\S+)", up.stdout).group(1)
    try:
        assert "Ray dashboard: http" in up.stdout
        again = raymlp("up", "--address", address, env=env)  # idempotent
        assert again.returncode == 0, again.stderr
        st = raymlp("status", "--address", address, "--json", env=env)
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        _expected_actors(status)
        assert status["dashboard_url"].startswith("http")
    finally:
        down = raymlp("down", "--address", address, "--stop-cluster", env=env)
    assert down.returncode == 0, down.stderr
    assert "stopped the Ray cluster" in down.stdout
    gone = raymlp("status", "--address", address, env=env, timeout=120)
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: ")


def test_up_status_down_against_ray_start_head(env):
    port, dash = _free_port(), _free_port()
    start = subprocess.run(
        [RAY, "start", "--head", f"--port={port}", f"--temp-dir={private_ray_tmp()}", f"--dashboard-port={dash}", "--num-cpus=1",
         f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
         f"--metrics-export-port={_free_port()}", "--disable-usage-stats"],
        env=env, text=True, capture_output=True, timeout=120,
    )
    assert start.returncode == 0, start.stderr
    address = f"127.0.0.1:{port}"
    try:
        up = raymlp("up", "--address", address, env=env)
        assert up.returncode == 0, up.stderr
        st = raymlp("status", "--address", address, "--json", env=env)
        assert st.returncode == 0, st.stderr
        _expected_actors(json.loads(st.stdout))
        down = raymlp("down", "--address", address, env=env)
        assert down.returncode == 0, down.stderr
        after = json.loads(raymlp("status", "--address", address, "--json", env=env).stdout)
        for row in after["actors"]:
            assert row["state"] in ("ABSENT", "NOT BUILT", "DEAD"), row
    finally:
        stop = raymlp("down", "--address", address, "--stop-cluster", env=env)
        assert stop.returncode == 0, stop.stderr
