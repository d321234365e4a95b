"""Registry benchmark, side by side with MLflow's model registry (sqlite backend, in-process).

    python -m bench.registry [--quick]

Measures, for raymlp: alias resolution as the Serve gateway does it (the local event-fed copy,
no actor call) and through the actor; register a version; move an alias (promote) durably —
the Delta event is committed before the call returns; how long an alias move takes to reach a
subscriber; how long a killed registry takes to come back (replay). For MLflow (the anchor):
``get_model_version_by_alias``, ``create_model_version``, ``set_registered_model_alias`` on a
sqlite registry in its own process.

MLflow pins libraries that clash with the main environment, so the anchor runs in
``bench/.venv-mlflow`` (created with ``python3 -m venv`` + ``pip install mlflow`` on first use)
and reports its timings as JSON. The last line is one JSON object: ``ours`` and ``anchor`` are
the alias-resolution p50 in ms, ``ratio`` = anchor / ours (higher is better).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import emit, parser, percentiles

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-mlflow"
SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}

ANCHOR = r"""
import json, logging, os, sys, tempfile, time, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
from mlflow import MlflowClient

n_write, n_resolve = int(sys.argv[1]), int(sys.argv[2])
d = tempfile.mkdtemp()
uri = f"sqlite:///{d}/mlflow.db"
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
client.create_registered_model("churn")
art = os.path.join(d, "art")
os.makedirs(art)
with open(os.path.join(art, "weights.bin"), "wb") as f:
    f.write(os.urandom(4096))

def timed(fn, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out

for i in range(3):  # warm up the engine and its caches
    client.create_model_version("churn", source=art)
register = timed(lambda i: client.create_model_version("churn", source=art), n_write)
promote = timed(lambda i: client.set_registered_model_alias("churn", "canary", str(1 + i % 2)),
                n_write)
resolve = timed(lambda i: client.get_model_version_by_alias("churn", "canary"), n_resolve)
import mlflow
print(json.dumps({"version": mlflow.__version__, "register": register, "promote": promote,
                  "resolve": resolve}))
"""


def _ensure_mlflow() -> Path:
    py = VENV / "bin" / "python"
    if (
        py.exists()
        and subprocess.run([str(py), "-c", "import mlflow"], capture_output=True).returncode == 0
    ):
        return py
    print(f"creating {VENV} with mlflow (first run only, a few minutes)...", flush=True)
    subprocess.run(
        [
            sys.executable if not sys.prefix.endswith(".venv") else "python3",
            "-m",
            "venv",
            str(VENV),
        ],
        check=True,
    )
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "mlflow"], check=True)
    return py


def run_anchor(n_write: int, n_resolve: int) -> dict[str, Any]:
    try:
        py = _ensure_mlflow()
    except (subprocess.CalledProcessError, OSError) as e:
        return {"error": f"could not install mlflow in {VENV}: {e}"}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(ANCHOR)
    try:
        proc = subprocess.run(
            [str(py), f.name, str(n_write), str(n_resolve)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        return {"error": f"mlflow anchor failed: {proc.stderr.strip()[-500:]}"}
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "version": data["version"],
        "resolve": percentiles(data["resolve"]),
        "register": percentiles(data["register"]),
        "promote": percentiles(data["promote"]),
    }


def run_ours(n_write: int, n_actor: int, n_local: int) -> dict[str, Any]:
    import ray

    from actors.registry import RegistryActor
    from raymlp._private.credentials import LOCAL_ADMIN, Caller
    from raymlp.client import Platform
    from raymlp.config import PlatformConfig

    for var in ("RAY_ADDRESS", "RAYMLP_ADDRESS"):
        os.environ.pop(var, None)
    root = tempfile.mkdtemp(prefix="raymlp-bench-registry-")
    cfg = PlatformConfig.model_validate({"storage": {"root": root}})
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace="raymlp",
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        handle = (
            ray.remote(RegistryActor)
            .options(
                name="registry",
                namespace="raymlp",
                max_concurrency=256,
                num_cpus=0,
                max_restarts=-1,
            )
            .remote(cfg.model_dump(mode="json"), "registry")
        )
        ray.get(handle.ping.remote())
        p = Platform(cfg, Caller(LOCAL_ADMIN))
        reg = p.registry
        art = Path(root) / "_art"
        art.mkdir()
        (art / "weights.bin").write_bytes(os.urandom(4096))
        for _ in range(3):
            reg.register("churn", art, signature=SIG)

        register = []
        for _ in range(n_write):
            t = time.perf_counter()
            reg.register("churn", art, signature=SIG)
            register.append(time.perf_counter() - t)
        promote = []
        for i in range(n_write):
            t = time.perf_counter()
            reg.set_alias("churn", "canary", 1 + i % 2)
            promote.append(time.perf_counter() - t)

        watcher = reg.watcher()
        visible = []
        for i in range(min(n_write, 100)):
            target = 1 + (i + 1) % 3
            t = time.perf_counter()
            reg.set_alias("churn", "champion", target)
            while watcher._aliases.get("churn", {}).get("champion") != target:
                time.sleep(0.0002)
            visible.append(time.perf_counter() - t)

        principal = reg.principal
        for _ in range(20):
            ray.get(handle.resolve.remote(principal, "churn", "canary"))
        via_actor = []
        for _ in range(n_actor):
            t = time.perf_counter()
            ray.get(handle.resolve.remote(principal, "churn", "canary"))
            via_actor.append(time.perf_counter() - t)

        batch = 1000
        local = []
        for _ in range(n_local):
            t = time.perf_counter()
            for _ in range(batch):
                watcher.resolve("churn", "canary")
            local.append((time.perf_counter() - t) / batch)

        stats = ray.get(handle.stats.remote(principal))
        t = time.perf_counter()
        ray.kill(handle, no_restart=False)
        time.sleep(0.05)
        assert reg.get("churn", alias="canary").version in (1, 2)
        restart_s = time.perf_counter() - t
        replay_s = ray.get(handle.stats.remote(principal))["replay_s"]
        reg.close()
        return {
            "resolve_local": percentiles(local),
            "resolve_actor": percentiles(via_actor),
            "register": percentiles(register),
            "promote": percentiles(promote),
            "alias_visible": percentiles(visible),
            "events": stats["last_seq"],
            "commit_p50_ms": stats["commit_p50_ms"],
            "restart_s": restart_s,
            "replay_s": replay_s,
        }
    finally:
        ray.shutdown()


def main() -> int:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n_write, n_actor, n_local, n_anchor_resolve = (
        (60, 500, 200, 300) if args.quick else (300, 3000, 1000, 2000)
    )
    print(
        f"raymlp registry: {n_write} registers, {n_write} promotes, {n_actor} actor "
        f"resolves, {n_local * 1000} local resolves",
        flush=True,
    )
    ours = run_ours(n_write, n_actor, n_local)
    for key in ("resolve_local", "resolve_actor", "register", "promote", "alias_visible"):
        print(
            f"  ours {key:14s} p50 {ours[key]['p50_ms']:.4f} ms  p99 {ours[key]['p99_ms']:.4f} ms"
        )
    print(
        f"  restart (kill -9 -> answering, {ours['events']} events): {ours['restart_s']:.2f} s "
        f"(replay {ours['replay_s'] * 1000:.0f} ms)",
        flush=True,
    )
    print("mlflow registry (sqlite, in-process, own venv)...", flush=True)
    anchor = run_anchor(n_write, n_anchor_resolve)
    result: dict[str, Any] = {
        "bench": "registry",
        "unit": "ms (alias resolution p50)",
        "ours": ours["resolve_local"]["p50_ms"],
        "ours_resolve_actor_p50_ms": ours["resolve_actor"]["p50_ms"],
        "ours_register_p50_ms": ours["register"]["p50_ms"],
        "ours_register_p99_ms": ours["register"]["p99_ms"],
        "ours_promote_p50_ms": ours["promote"]["p50_ms"],
        "ours_promote_p99_ms": ours["promote"]["p99_ms"],
        "ours_alias_visible_p50_ms": ours["alias_visible"]["p50_ms"],
        "ours_alias_visible_p99_ms": ours["alias_visible"]["p99_ms"],
        "ours_commit_p50_ms": ours["commit_p50_ms"],
        "ours_restart_s": ours["restart_s"],
        "ours_replay_ms": ours["replay_s"] * 1000,
        "events": ours["events"],
        "quick": bool(args.quick),
    }
    if "error" in anchor:
        print(f"  anchor unavailable: {anchor['error']}")
        result.update(anchor=None, ratio=None, anchor_error=anchor["error"])
    else:
        for key in ("resolve", "register", "promote"):
            print(
                f"  mlflow {key:9s} p50 {anchor[key]['p50_ms']:.3f} ms  "
                f"p99 {anchor[key]['p99_ms']:.3f} ms"
            )
        result.update(
            anchor=anchor["resolve"]["p50_ms"],
            ratio=anchor["resolve"]["p50_ms"] / ours["resolve_local"]["p50_ms"],
            ratio_via_actor=anchor["resolve"]["p50_ms"] / ours["resolve_actor"]["p50_ms"],
            anchor_register_p50_ms=anchor["register"]["p50_ms"],
            anchor_promote_p50_ms=anchor["promote"]["p50_ms"],
            anchor_version=anchor["version"],
        )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
