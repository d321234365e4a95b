"""Chaos benchmark: recovery time and latency under load when one process at a time is killed.

    python -m bench.chaos [--quick]

A served platform (2 Gateway and 2 ModelServer replicas, a 25 % canary, a fallback model) on a
local ``ray.cluster_utils.Cluster`` (a head raylet and, for the last fault, a worker raylet),
4 HTTP clients on loopback with fresh inputs. Per fault — SIGKILL of a ModelServer replica, a
Gateway replica, the feature_store, registry and monitor actors, and the removal of a worker
raylet hosting a ModelServer replica — it reports:

* ``recovery_s``: kill → the first answer from route ``primary`` sent after the kill;
* ``actor_back_s``: kill → the actor (or the replica count) ALIVE again in a new process;
* ``window_p99_ms``: p99 latency of requests sent in [kill, kill + 10 s] (or until recovered);
* ``five_xx`` and ``non_schema``: answers with status ≥ 500 (or none), errors outside our schema.

Goals: every actor back within 5 s; p99 during any single fault ≤ 2 s. The last line is one
JSON object (``ours``: the worst window p99 in ms; ``anchor``: the 2 s goal; ``ratio``:
anchor / ours, higher is better).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import emit, parser

GOAL_BACK_S = 5.0
GOAL_P99_MS = 2000.0
FAULTS = ("model_server", "gateway", "feature_store", "registry", "monitor", "raylet")


def main() -> None:
    from raymlp._private.serve_ingress import cluster_env, haproxy_binary

    ap = parser(__doc__.splitlines()[0])
    ap.add_argument(
        "--ingress", choices=("haproxy", "proxy"),
        default="haproxy" if haproxy_binary() else "proxy",
        help="Serve's HTTP ingress of the cluster (default: the platform's, haproxy)",
    )
    ap.add_argument("--faults", default=",".join(FAULTS),
                    help=f"comma-separated subset of {','.join(FAULTS)}")
    args = ap.parse_args()
    wanted = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(FAULTS))
    if unknown:
        ap.error(f"--faults: unknown {unknown} (rule: a subset of {','.join(FAULTS)})")
    after_s = 6.0 if args.quick else 10.0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from bench._chaos import free_port

    # before Ray starts: its processes read Serve's ingress from the environment (the flag
    # wins over an exported RAY_SERVE_ENABLE_HA_PROXY)
    os.environ.update(cluster_env(args.ingress, free_port=free_port))
    import ray
    from ray.cluster_utils import Cluster

    from bench._chaos import (
        Load,
        Victim,
        find,
        remember_replicas,
        run_fault,
        sigkill,
        start_app,
        wait_until,
    )
    from raymlp.serving.app import GATEWAY, MODEL_SERVER

    cluster = Cluster(
        initialize_head=True,
        # free dashboard port: another cluster (a test session's, a user's) may hold 8265
        head_node_args={"num_cpus": 2, "include_dashboard": True, "resources": {"head": 1},
                        "dashboard_port": free_port()},
    )
    ray.init(address=cluster.address, namespace="raymlp", logging_level=logging.WARNING)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    t = time.perf_counter()
    app = start_app(Path(tempfile.mkdtemp(prefix="raymlp-bench-chaos-")))
    print(f"platform and application up in {time.perf_counter() - t:.1f}s at {app.url}",
          flush=True)

    def kill_first(victims: list[Victim]) -> tuple[float, Victim]:
        return sigkill(victims[0]), victims[0]

    def settle() -> None:
        wait_until(lambda: len(find(deployment=MODEL_SERVER)) == 2, 120, 0.3, "2 ModelServer")
        wait_until(lambda: len(find(deployment=GATEWAY)) == 2, 120, 0.3, "2 Gateway")
        remember_replicas(MODEL_SERVER)
        remember_replicas(GATEWAY)

    faults: list[tuple[str, Any]] = [
        ("model_server", lambda: kill_first(find(deployment=MODEL_SERVER))),
        ("gateway", lambda: kill_first(find(deployment=GATEWAY))),
        ("feature_store", lambda: kill_first(find(name="feature_store"))),
        ("registry", lambda: kill_first(find(name="registry"))),
        ("monitor", lambda: kill_first(find(name="monitor"))),
    ]
    results: dict[str, dict[str, Any]] = {}
    for name, kill in faults:
        if name not in wanted:
            continue
        settle()
        load = Load(app.url, clients=4).start()
        fault = run_fault(name, load, kill, after_s=after_s, recover_timeout=90)
        fault.samples = load.stop()
        results[name] = _report(name, fault.summary())

    if "raylet" in wanted:
        _raylet_fault(cluster, app, settle, after_s, results)
    app.close()
    ray.shutdown()
    cluster.shutdown()
    worst_p99 = max(r["window_p99_ms"] for r in results.values())
    backs = [r["actor_back_s"] for r in results.values()]
    worst_back = max((b if b is not None else float("inf")) for b in backs)
    out: dict[str, Any] = {
        "bench": "chaos",
        "unit": "ms (worst p99 in a fault window)",
        "ingress": args.ingress,
        "ours": worst_p99,
        "anchor": GOAL_P99_MS,
        "ratio": GOAL_P99_MS / worst_p99 if worst_p99 else None,
        "worst_actor_back_s": worst_back,
        "total_5xx": sum(r["five_xx"] for r in results.values()),
        "total_non_schema": sum(r["non_schema"] for r in results.values()),
        "faults": results,
        "goals": {
            f"every_actor_back<={GOAL_BACK_S:g}s": worst_back <= GOAL_BACK_S,
            f"p99_per_fault<={GOAL_P99_MS:g}ms": worst_p99 <= GOAL_P99_MS,
            "no_5xx": sum(r["five_xx"] for r in results.values()) == 0,
        },
    }
    emit(out)


def _raylet_fault(cluster: Any, app: Any, settle: Any, after_s: float,
                  results: dict[str, dict[str, Any]]) -> None:
    from bench._chaos import Load, Victim, find, run_fault, sigkill, wait_until
    from raymlp.serving.app import MODEL_SERVER

    # the worker raylet: place a ModelServer replica there (Serve spreads a replaced replica)
    node = cluster.add_node(num_cpus=1, resources={"worker_node": 1})
    cluster.wait_for_nodes()
    for _ in range(4):
        settle()
        if any(v.node_id == node.node_id for v in find(deployment=MODEL_SERVER)):
            break
        victim = find(deployment=MODEL_SERVER)[0]
        sigkill(victim)
        wait_until(lambda v=victim: all(x.pid != v.pid for x in find(deployment=MODEL_SERVER))
                   and len(find(deployment=MODEL_SERVER)) == 2, 120, 0.3, "replica replaced")
    settle()
    on_worker = [v for v in find(deployment=MODEL_SERVER) if v.node_id == node.node_id]
    if on_worker:
        def kill_node() -> tuple[float, Victim]:
            t_kill = time.time()
            cluster.remove_node(node, allow_graceful=False)
            return t_kill, on_worker[0]

        load = Load(app.url, clients=4).start()
        fault = run_fault("raylet", load, kill_node, after_s=after_s, recover_timeout=90)
        fault.samples = load.stop()
        results["raylet"] = _report("raylet", fault.summary())
    else:
        print("raylet: no ModelServer replica landed on the worker node; skipped", flush=True)
        cluster.remove_node(node, allow_graceful=False)


def _report(name: str, s: dict[str, Any]) -> dict[str, Any]:
    keep = ("requests", "statuses", "errors", "five_xx", "non_schema", "recovery_s",
            "actor_back_s", "window_requests", "window_p99_ms", "routes", "error_times")
    r = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items() if k in keep}

    def fmt(x: float | None) -> str:
        return "never" if x is None else f"{x:.2f}s"

    print(
        f"  {name:14} recovery {fmt(s['recovery_s']):>7}  back {fmt(s['actor_back_s']):>7}  "
        f"p99 {s['window_p99_ms']:8.1f} ms  5xx {s['five_xx']:3}  non-schema {s['non_schema']:3}  "
        f"({s['requests']} requests)",
        flush=True,
    )
    return r


if __name__ == "__main__":
    main()
