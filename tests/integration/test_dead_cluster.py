"""A cluster that died uncleanly: `ray start --head`, then every one of its processes killed -9,
so Ray's record of the machine's current cluster (``ray_current_cluster``) names a GCS that no
longer listens. ``auto`` passes over it within seconds and starts a cluster of its own, saying so
in one line; an explicit address that does not answer fails within seconds with one line.

Everything runs in fresh Python processes (this test session may hold a Ray cluster of its own)
with a private Ray temp dir (``RAY_TMPDIR``), so the machine's /tmp/ray is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from raymlp._private.cluster import probe
from tests._net import free_port
from tests._wait import WaitTimeout, wait_for

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


@dataclass
class DeadCluster:
    tmp: Path  # RAY_TMPDIR of every process here
    env: dict[str, str]  # what those processes run with
    record: Path  # $RAY_TMPDIR/ray/ray_current_cluster
    gcs: str  # the address it records: the dead GCS
    client: str  # ray://... of the dead cluster's client server
    root: Path  # storage root of the platform config


def _cluster_processes(tmp: Path, gcs: str | None = None) -> list[psutil.Process]:
    """The processes of the cluster under ``tmp`` (or of the GCS at ``gcs``), by their
    command lines: a path under ``tmp``, or ``gcs`` as a whole argument value."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            args = " ".join(proc.info["cmdline"] or []).split()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        ours = any(f"{tmp}/" in a for a in args) or (
            gcs is not None and any(a.rpartition("=")[2] == gcs for a in args)
        )
        if ours and proc.pid != os.getpid():
            found.append(proc)
    return found


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill_9(tmp: Path, gcs: str | None = None) -> list[psutil.Process]:
    procs = _cluster_processes(tmp, gcs)
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    wait_for(
        lambda: all(_gone(p) for p in procs), timeout=30, message="killed Ray processes to be gone"
    )
    return procs


def _listeners(port: int) -> list[str]:
    """Who listens on ``port`` (a failure message: which process outlived the kill)."""
    out = []
    for c in psutil.net_connections("tcp"):
        if c.laddr and c.laddr.port == port:
            try:
                cmd = " ".join(psutil.Process(c.pid).cmdline())[:200] if c.pid else "?"
            except psutil.Error:
                cmd = "?"
            out.append(f"{c.status} pid={c.pid} {cmd}")
    return out


def _env(tmp: Path, root: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAYMLP_ADDRESS", "RAYMLP_STORAGE_ROOT")
    }
    cfg = tmp / "platform.yaml"
    cfg.write_text(
        f"storage: {{root: {root}}}\n"
        f"ray: {{num_cpus: 1, dashboard_port: {free_port()}}}\n"
        f"http: {{host: 127.0.0.1, port: {free_port()}}}\n"
    )
    token = tmp / "ray_auth_token"
    token.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    token.chmod(0o600)
    env.update(
        RAY_TMPDIR=str(tmp),
        RAYMLP_CONFIG=str(cfg),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


@pytest.fixture(scope="module")
def dead_cluster() -> Iterator[DeadCluster]:
    # Short: Ray's socket paths live under it.
    tmp = Path(tempfile.mkdtemp(prefix="rmlp-dead-", dir="/tmp"))
    root = tmp / "root"
    env = _env(tmp, root)
    port, client_port = free_port(), free_port()
    try:
        start = subprocess.run(
            [
                RAY,
                "start",
                "--head",
                f"--port={port}",
                "--num-cpus=1",
                "--include-dashboard=false",
                f"--ray-client-server-port={client_port}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                "--disable-usage-stats",
            ],
            env=env,
            text=True,
            capture_output=True,
            timeout=180,
            cwd=tmp,
        )
        assert start.returncode == 0, start.stderr
        record = tmp / "ray" / "ray_current_cluster"
        gcs = record.read_text().strip()
        assert gcs.endswith(f":{port}"), gcs
        assert probe(gcs).alive
        # The unclean death: GCS, raylet and the rest killed at once, nothing cleaned up.
        killed = _kill_9(tmp, gcs)
        assert any("gcs_server" in " ".join(p.info["cmdline"] or []) for p in killed)
        assert record.read_text().strip() == gcs  # Ray's record stays behind
        # the GCS's listening socket closes with its last process (a forked child may hold
        # it a moment longer): poll, and name whoever still listens if it never closes
        port_no = int(gcs.rpartition(":")[2])
        try:
            wait_for(lambda: not probe(gcs, timeout_s=1).alive, timeout=20,
                     message="the killed GCS's port to close")
        except WaitTimeout as e:
            raise AssertionError(f"{e}; listening there: {_listeners(port_no)}") from None
        host = gcs.rpartition(":")[0]
        yield DeadCluster(tmp, env, record, gcs, f"ray://{host}:{client_port}", root)
    finally:
        _kill_9(tmp)  # whatever a test started here and left running
        shutil.rmtree(tmp, ignore_errors=True)


def _python(script: str, *args: str, env: dict[str, str], timeout: float = 180) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert results, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads(results[-1].removeprefix("RESULT "))
    out["stderr"] = proc.stderr
    return out


# Times the warning from inside the process (a logger filter sees each record as it is made;
# it leaves where the record goes alone).
AUTO = r"""
import json, logging, time
stamps = []
class Stamp(logging.Filter):
    def filter(self, record):
        stamps.append(time.monotonic() - t0)
        return True
logging.getLogger("raymlp._private.cluster").addFilter(Stamp())
import ray, raymlp
t0 = time.monotonic()
p = raymlp.connect(address="auto")
took = time.monotonic() - t0
out = {"warned_after_s": stamps, "connect_s": took, "address": p.cluster.address,
       "started_here": p.cluster.started_here, "actors": [r["state"] for r in p.status()]}
ray.shutdown()
print("RESULT " + json.dumps(out))
"""


def test_auto_passes_over_the_dead_cluster_and_starts_an_embedded_one(dead_cluster):
    out = _python(AUTO, env=dead_cluster.env)
    # Told within 5 s, in one line, that the recorded cluster is dead and what happens instead.
    assert len(out["warned_after_s"]) == 1, out
    assert out["warned_after_s"][0] < 5.0, out
    said = [ln for ln in out["stderr"].splitlines() if dead_cluster.gcs in ln]
    assert len(said) == 1, out["stderr"][-3000:]
    assert "is not answering" in said[0] and "starting an embedded Ray cluster" in said[0]
    # Up on a cluster of its own, with the platform actors.
    assert out["started_here"] is True
    assert out["address"] != dead_cluster.gcs
    assert out["actors"] and set(out["actors"]) == {"ALIVE"}, out
    assert out["connect_s"] < 120, out
    # Passed over, not cleaned up: forgetting it is `ray stop`'s job.
    assert dead_cluster.record.read_text().strip() == dead_cluster.gcs


EXPLICIT = r"""
import json, os, sys, time
import raymlp
from raymlp.config import PlatformConfig
from raymlp.errors import UnavailableError
dead, client, root = sys.argv[1:4]
cfg = PlatformConfig.model_validate({"storage": {"root": root}, "ray": {"address": dead}})
cases = {
    "argument": ({"address": dead}, {}),
    "RAYMLP_ADDRESS": ({}, {"RAYMLP_ADDRESS": dead}),
    "RAY_ADDRESS": ({}, {"RAY_ADDRESS": dead}),
    "RAY_ADDRESS over auto": ({"address": "auto"}, {"RAY_ADDRESS": dead}),
    "config": ({"config": cfg}, {}),
    "ray client": ({"address": client}, {}),
}
out = {}
for name, (kwargs, env) in cases.items():
    for k in ("RAY_ADDRESS", "RAYMLP_ADDRESS"):
        os.environ.pop(k, None)
    os.environ.update(env)
    t0 = time.monotonic()
    try:
        raymlp.connect(**kwargs)
        out[name] = {"joined": True}
    except UnavailableError as e:
        out[name] = {"s": time.monotonic() - t0, "message": str(e), "context": e.context}
print("RESULT " + json.dumps(out, default=str))
"""


def test_an_explicit_dead_address_fails_within_5_s_with_one_line(dead_cluster):
    out = _python(
        EXPLICIT,
        dead_cluster.gcs,
        dead_cluster.client,
        str(dead_cluster.root),
        env=dead_cluster.env,
    )
    sources = {
        "argument": "the address argument",
        "RAYMLP_ADDRESS": "RAYMLP_ADDRESS",
        "RAY_ADDRESS": "RAY_ADDRESS",
        "RAY_ADDRESS over auto": "RAY_ADDRESS",
        "config": "ray.address of the platform config",
        "ray client": "the address argument",
    }
    for case, source in sources.items():
        got = out[case]
        address = dead_cluster.client if case == "ray client" else dead_cluster.gcs
        assert "joined" not in got, (case, got)
        assert got["s"] < 5.0, (case, got)
        assert "\n" not in got["message"], (case, got)
        assert repr(address) in got["message"] and source in got["message"], (case, got)
        assert got["context"]["address"] == address
        assert got["context"]["rule"].startswith("an explicit Ray address must accept")


def test_status_reports_the_dead_recorded_cluster_in_one_line(dead_cluster):
    proc = subprocess.run(
        [sys.executable, "-m", "raymlp", "status"],
        env=dead_cluster.env,
        text=True,
        capture_output=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert dead_cluster.gcs in errors[0] and "is not answering" in errors[0]
    assert dead_cluster.record.read_text().strip() == dead_cluster.gcs


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_up_passes_over_the_dead_cluster_and_starts_a_local_one(dead_cluster):
    # `up` with `auto` starts `ray start --head` on Ray's fixed ports.
    busy = [p for p in (6379, 10001, 52365) if not _port_free(p)]
    if busy:
        pytest.skip(f"Ray's default ports {busy} are held by another cluster on this machine")
    env = dead_cluster.env
    up = subprocess.run(
        [sys.executable, "-m", "raymlp", "up"],
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
        cwd=REPO,
    )
    address = next(
        (ln.split(": ", 1)[1] for ln in up.stdout.splitlines() if ln.startswith("Ray address: ")),
        None,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        said = [ln for ln in up.stderr.splitlines() if dead_cluster.gcs in ln]
        assert len(said) == 1, up.stderr[-3000:]
        assert "is not answering" in said[0] and "a local Ray cluster" in said[0]
        assert address is not None and address.endswith(":6379"), up.stdout
        # `ray start` recorded the new cluster in place of the dead one.
        assert dead_cluster.record.read_text().strip() == address
    finally:
        if address is not None:
            down = subprocess.run(
                [sys.executable, "-m", "raymlp", "down", "--address", address, "--stop-cluster"],
                env=env,
                text=True,
                capture_output=True,
                timeout=180,
                cwd=REPO,
            )
            assert down.returncode == 0, down.stderr[-3000:]
            # Like `ray stop`: the stopped cluster is no longer the machine's current one.
            assert not dead_cluster.record.exists()
            dead_cluster.record.write_text(dead_cluster.gcs)  # the dead one, for other tests
