"""`raymlp up && raymlp status && raymlp down` as a user types them, against a local cluster that
`up` starts and against one started beforehand with `ray start --head`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from actors import ACTOR_SPECS
from tests._net import free_port
from tests.e2e.conftest import base_env, private_ray_tmp, run_raymlp, write_auth_token

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return base_env(tmp_path)


def raymlp(*args: str, env: dict[str, str], timeout: float = 180):
    return run_raymlp(*args, env=env, timeout=timeout)


def _expected_actors(status: dict) -> None:
    rows = {r["actor"]: r for r in status["actors"]}
    for spec in ACTOR_SPECS:
        assert rows[spec.name]["state"] == "ALIVE", rows
        assert rows[spec.name]["node"] != "-"


def test_up_starts_a_local_cluster_then_status_and_down(env):
    assert not Path(env["RAY_AUTH_TOKEN_PATH"]).exists()  # as on a fresh machine
    up = raymlp("up", "--address", "local", env=env)
    assert up.returncode == 0, up.stderr
    assert Path(env["RAY_AUTH_TOKEN_PATH"]).stat().st_mode & 0o077 == 0  # created, private
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
    write_auth_token(env)
    port, dash = free_port(), free_port()
    start = subprocess.run(
        [RAY, "start", "--head", f"--port={port}", f"--temp-dir={private_ray_tmp()}", f"--dashboard-port={dash}", "--num-cpus=1",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--metrics-export-port={free_port()}", "--disable-usage-stats"],
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


def test_up_on_a_machine_with_an_empty_home(tmp_path):
    """A new machine: no ~/.ray/auth_token, token auth on. `raymlp up` creates the token where
    Ray looks for it, starts the cluster and joins it."""
    env = base_env(tmp_path)
    del env["RAY_AUTH_TOKEN_PATH"]
    home = tmp_path / "home"
    home.mkdir()
    env["HOME"] = str(home)
    up = raymlp("up", "--address", "local", env=env)
    assert up.returncode == 0, up.stderr
    address = re.search(r"Ray address: (\S+)", up.stdout).group(1)
    try:
        token = home / ".ray" / "auth_token"
        assert token.read_text().strip()
        assert token.stat().st_mode & 0o077 == 0
        st = raymlp("status", "--address", address, "--json", env=env)
        assert st.returncode == 0, st.stderr
    finally:
        down = raymlp("down", "--address", address, "--stop-cluster", env=env)
    assert down.returncode == 0, down.stderr
