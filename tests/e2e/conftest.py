"""End-to-end fixtures: a real `ray start --head` cluster in its own processes.

e2e tests drive the platform only through subprocesses (the CLI, `ray job submit`, HTTP), never
`ray.init` in the test process (which belongs to the integration tests' session cluster).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._net import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def private_ray_tmp() -> str:
    """A short private Ray temp dir: `ray start` then doesn't become the machine's "current
    cluster" that `address="auto"` finds, so other Ray programs never join it by accident."""
    return tempfile.mkdtemp(prefix="rmlp-", dir="/tmp")


def base_env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "platform.yaml"
    # A free Serve port: other clusters of the test session (or a demo) may hold 8000.
    cfg.write_text(f"storage: {{root: {tmp_path / 'root'}}}\n"
                   f"http: {{host: 127.0.0.1, port: {free_port()}}}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYMLP_ADDRESS")}
    env["RAYMLP_CONFIG"] = str(cfg)
    # `ray job submit -- python -m ...` runs `python` from the cluster's PATH: ours first.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    # Ray 2.60 turns token auth on for the clusters it starts, but its own CLI sends the token
    # (~/.ray/auth_token) to an explicit --address only in token mode.
    env["RAY_AUTH_MODE"] = "token"
    # A token of this test's own, not yet written: like a fresh machine, where no
    # ~/.ray/auth_token exists (`raymlp up` must create it; a bare `ray start` needs
    # `write_auth_token` first, as a user runs `ray get-auth-token --generate`).
    env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "ray_auth_token")
    return env


def write_auth_token(env: dict[str, str]) -> None:
    """What `ray get-auth-token --generate` does, at this test's token path."""
    path = Path(env["RAY_AUTH_TOKEN_PATH"])
    if not path.exists():
        path.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
        path.chmod(0o600)


def run_raymlp(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raymlp", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, cwd=REPO)


@dataclass
class HeadNode:
    address: str
    dashboard: str
    env: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def head_node(tmp_path_factory) -> Iterator[HeadNode]:
    """`ray start --head` (2 CPUs, free ports) with the platform up on it; stopped after."""
    tmp = tmp_path_factory.mktemp("head")
    env = base_env(tmp)
    write_auth_token(env)
    port, dash = free_port(), free_port()
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
         f"--temp-dir={private_ray_tmp()}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", f"--ray-client-server-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
         "--disable-usage-stats"],
        env=env, text=True, capture_output=True, timeout=180, cwd=tmp,
    )
    assert start.returncode == 0, start.stderr
    address = f"127.0.0.1:{port}"
    try:
        up = run_raymlp("up", "--address", address, env=env)
        assert up.returncode == 0, up.stderr
        yield HeadNode(address, f"http://127.0.0.1:{dash}", env, tmp / "root")
    finally:
        run_raymlp("down", "--address", address, "--stop-cluster", env=env)
