"""Scale-out: PIT join, batch inference and serving throughput on 1, 2 and 4 raylets.

For each N of ``--raylets`` a local ``ray.cluster_utils.Cluster`` starts, in a fresh process
(no driver state carries over from one cluster to the next): a head raylet with 0 CPUs (the
driver, the platform actors, Serve's controller and proxy: none of them claims a CPU) and N
worker raylets of ``max(1, --cpus-total // N)`` CPUs each (``--cpus-total`` defaults to
``os.cpu_count()``). The driver joins it by address (``ray.init(address=cluster.address)``, then
``raymlp.connect()``); one storage root serves every N (the features are ingested and the model
registered on the first cluster, the later ones rebuild the platform from it); the workloads:

- **pit_join**: ``p.features.get_historical_features`` over :mod:`bench.pit_join`'s tables
  (3 views x 10 features, 7-day TTL); entity rows/s, best of ``--repeat`` (at least 5: each run
  is short) after a warm-up;
- **batch_inference**: :func:`bench.batch_inference.ours` (read → one predictor actor per
  cluster CPU → Parquet → one Delta commit); rows/s, best of ``--repeat`` after a warm-up;
- **serving**: the platform's ModelServer (one 1-CPU replica per cluster CPU, ``@serve.batch``)
  called through its DeploymentHandle by ``--clients`` concurrent callers for ``--seconds``
  (:func:`bench.serving.handle_load`); requests/s.

Per workload: ``speedup`` = throughput / throughput at the first N, ``efficiency`` = speedup /
(cpus / cpus at the first N), 1.0 being linear. Where the raylets claim more CPUs than the machine
has (4 raylets of 1 CPU on 2 cores) they are oversubscribed: the table says so, and
``efficiency_physical`` divides by the cores actually there (``min(cpus, os.cpu_count())``)
instead. On a 2-core machine this shows the mechanism (the same work split over more raylets:
what that costs in scheduling, object transfer and process start-up); on a machine with more
cores it gives the real curve (e.g. ``--cpus-total 16 --raylets 1,2,4,8``). The results must not
depend on N: the PIT join's rows and a SHA-256 of its sorted result, the predictions (max |Δp|
against the first N) and the answer to one fixed serving request are compared.

    python -m bench.scaling [--quick] [--raylets 1,2,4] [--cpus-total N] [--workloads ...]

Last line: ``{"bench": "scaling", "ours": mean efficiency of the workloads at the largest N,
"anchor": 1.0 (linear), "ratio": ours / anchor, "unit", "workloads": {name: [{"raylets",
"cpus", "throughput", "speedup", "efficiency", "efficiency_physical", ...}]}, "identical",
"cpus": os.cpu_count(), "load_avg_1m", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench._common import emit, parser

WORKLOADS = ("pit_join", "batch_inference", "serving")
UNITS = {"pit_join": "entity rows/s", "batch_inference": "rows/s", "serving": "req/s"}
SERVE_APP = "scaling"
SERVE_MODEL = "scaling-mlp"
#: timed PIT join runs at least (each is short: a few of them are cheap, and steady the best)
PIT_MIN_RUNS = 5
#: the most one N (cluster start, every workload, shutdown) may take before it is stopped
PER_N_TIMEOUT_S = 1800


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 3)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def _digest(table: pa.Table) -> str:
    """SHA-256 (16 hex digits) of the table sorted by ``row_id``: independent of partitioning."""
    t = table.sort_by("row_id").combine_chunks().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


# -- one N, in its own process ------------------------------------------------------------------


def _populate(p: Any, work: Path, args: argparse.Namespace) -> None:
    """On the first cluster: the feature views (ingested) and the served model (registered)."""
    import ray

    from bench.pit_join import N_FEATURES, TTL_DAYS, VIEWS
    from raymlp.predictor.artifact import read_json
    from raymlp.serving.examples import make_artifact

    schema = [{"name": f"f{i}", "dtype": "float64"} for i in range(N_FEATURES)]
    views = [
        {"name": v, "entities": ["customer"], "ttl": f"{TTL_DAYS}d", "online": False}
        | {"schema": schema}
        for v in VIEWS
    ]
    p.features.apply(
        {"entities": [{"name": "customer", "join_keys": ["customer_id"]}], "feature_views": views}
    )
    for v in VIEWS:
        p.features.ingest(v, ray.data.from_arrow(pq.read_table(work / f"view-{v}.parquet")))
    dims = [int(x) for x in args.serve_dims.split(",")]
    art = make_artifact(work / "serve-model", seed=1, hidden_dims=dims)
    version = p.registry.register(SERVE_MODEL, art, signature=read_json(art, "signature"))
    p.registry.promote(SERVE_MODEL, version, "production")
    (work / "populated").touch()


def pit_join(p: Any, work: Path, args: argparse.Namespace, cpus: int) -> dict[str, Any]:
    import ray

    from bench.pit_join import N_FEATURES, VIEWS

    entity = pq.read_table(work / "entity.parquet")
    feats = [f"{v}:f{i}" for v in VIEWS for i in range(N_FEATURES)]

    def once() -> tuple[float, list]:
        t = time.perf_counter()
        refs = p.features.get_historical_features(entity, feats).to_arrow_refs()
        ray.wait(refs, num_returns=len(refs))
        return time.perf_counter() - t, refs

    once()  # warm-up: worker processes start, imports
    times: list[float] = []
    refs: list[Any] = []
    for _ in range(max(PIT_MIN_RUNS, args.repeat)):
        dt, refs = once()
        times.append(dt)
    out = pa.concat_tables(ray.get(refs))
    return {
        "throughput": entity.num_rows / min(times),
        "seconds": min(times),
        "runs_s": times,
        "rows": out.num_rows,
        "sha256": _digest(out),
    }


def batch_inference(p: Any, work: Path, args: argparse.Namespace, cpus: int) -> dict[str, Any]:
    from bench.batch_inference import ours

    data, model = work / "bi-data", work / "bi-model"
    rows = pq.ParquetDataset(data).read(columns=["customer_id"]).num_rows
    warm = work / f"bi-{cpus}-{os.getpid()}"
    (warm / "data").mkdir(parents=True)
    pq.write_table(pq.read_table(data / "part-0.parquet").slice(0, 10_000), warm / "data/w.parquet")
    ours(warm / "data", model, warm / "root-warm", cpus)  # warm-up: actor processes, torch
    times: list[float] = []
    out: pa.Table | None = None
    for i in range(args.repeat):
        dt, out, _ = ours(data, model, warm / f"root-{i}", cpus)
        times.append(dt)
    assert out is not None
    probs = work / f"probabilities-{args.one}.npy"  # compared with the first N's by the parent
    np.save(probs, out.sort_by("customer_id").column("probability").to_numpy())
    shutil.rmtree(warm, ignore_errors=True)
    return {
        "throughput": rows / min(times),
        "seconds": min(times),
        "runs_s": times,
        "rows": out.num_rows,
        "probabilities": str(probs),
    }


def serving(p: Any, work: Path, args: argparse.Namespace, cpus: int) -> dict[str, Any]:
    from ray import serve

    from bench.serving import _free_port, handle_load
    from raymlp.serving.app import MODEL_SERVER
    from raymlp.serving.examples import example_features

    serve.start(
        proxy_location="HeadOnly",  # the raylets share one host: one proxy owns the port
        http_options={"host": "127.0.0.1", "port": _free_port()},
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    t = time.perf_counter()
    p.serve.deploy(
        {
            "name": SERVE_APP,
            "models": [{"name": SERVE_MODEL}],
            "gateway": {"num_replicas": 1, "num_cpus": 0},
            "model_server": {
                "num_replicas": cpus,
                "num_cpus": 1,
                "max_ongoing_requests": 64,
                "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.005},
            },
            "fallback_server": {"enabled": False},
            "timeouts": {"primary_s": 60.0},  # measure throughput, not timeouts
            "cache": {"enabled": False},
            "prediction_log": {"enabled": False},
        }
    )
    deploy_s = time.perf_counter() - t
    handle = serve.get_deployment_handle(MODEL_SERVER, SERVE_APP).options(
        multiplexed_model_id=f"{SERVE_MODEL}:1", method_name="predict"
    )
    fixed = handle.remote({"features": example_features(7)}).result()
    if "probability" not in fixed:
        raise RuntimeError(f"the ModelServer did not answer a valid request: {fixed}")

    def items(i: int) -> dict[str, Any]:
        return {"features": example_features(i)}

    # every replica loads the model on its first request: one second of load first
    asyncio.run(handle_load(handle, items, args.clients, 1.0))
    r = asyncio.run(handle_load(handle, items, args.clients, args.seconds))
    return {
        "throughput": r["rps"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "requests": r["requests"],
        "clients": args.clients,
        "replicas": cpus,
        "deploy_s": deploy_s,
        "answer": fixed["probability"],
    }


RUNNERS = {"pit_join": pit_join, "batch_inference": batch_inference, "serving": serving}


def run_one(args: argparse.Namespace) -> int:
    """A head (0 CPUs) + ``args.one`` worker raylets: the workloads, then everything down."""
    import ray
    from ray.cluster_utils import Cluster

    import raymlp
    from raymlp.config import PlatformConfig

    n, work = args.one, Path(args.workdir)
    wanted = args.workloads.split(",")
    cfg = PlatformConfig.model_validate(
        {"storage": {"root": str(work / "root")}, "registry": {"approval_required": False}}
    )
    results: dict[str, dict[str, Any]] = {}
    t = time.perf_counter()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        for _ in range(n):
            cluster.add_node(num_cpus=args.cpus_each)
        cluster.wait_for_nodes()
        # Joined by ray.init first (as tests/conftest.py does), then raymlp.connect() uses that
        # session: raymlp.connect(address=...) would switch this driver to token auth whenever
        # ~/.ray/auth_token exists, and a Cluster's raylets (no token mode) then cannot reach
        # it (OwnerDiedError on the first object they fetch from the driver).
        ray.init(
            address=cluster.address, namespace=cfg.ray.namespace, logging_level=logging.WARNING
        )
        p = raymlp.connect(config=cfg)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        cpus = int(ray.cluster_resources().get("CPU", 0))
        nodes = sum(1 for x in ray.nodes() if x["Alive"])
        print(
            f"-- {n} worker raylet(s) x {args.cpus_each} CPU: {cpus} CPUs, {nodes} nodes alive "
            f"(head included), up in {time.perf_counter() - t:.1f}s",
            flush=True,
        )
        if not (work / "populated").exists():
            _populate(p, work, args)
        for name in wanted:
            load0 = _load()
            r = RUNNERS[name](p, work, args, cpus)
            r.update(raylets=n, cpus=cpus, load_avg_1m=[load0, _load()])
            results[name] = r
            print(f"   {name}: {r['throughput']:,.1f} {UNITS[name]}", flush=True)
    finally:
        if ray.is_initialized():
            if "serving" in wanted:
                from ray import serve

                try:
                    serve.shutdown()
                except Exception as e:  # noqa: BLE001 - the cluster goes next anyway
                    print(f"   serve.shutdown: {e}", flush=True)
            ray.shutdown()
        cluster.shutdown()
    print(json.dumps(results, default=float), flush=True)
    return 0


# -- the parent: inputs, one process per N, the tables ------------------------------------------


def _run_n(n: int, cpus_each: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``run_one`` in a fresh process; its progress lines are passed on, its last line parsed."""
    passed = {
        "--one": n,
        "--cpus-each": cpus_each,
        "--workdir": work,
        "--workloads": args.workloads,
        "--repeat": args.repeat,
        "--clients": args.clients,
        "--seconds": args.seconds,
        "--serve-dims": args.serve_dims,
    }
    flags = [x for k, v in passed.items() for x in (k, str(v))]
    cmd = [sys.executable, "-m", "bench.scaling", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    # a hung child is killed (its Cluster's processes go with it: Ray's reaper)
    watchdog = threading.Timer(PER_N_TIMEOUT_S, proc.kill)
    watchdog.start()
    last = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if last:
                print(last, end="", flush=True)
            last = line
        rc = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        print(last, end="", flush=True)
        raise SystemExit(f"bench.scaling: {n} raylets failed ({rc})")
    return json.loads(last)


def _same_as_first(name: str, r: dict[str, Any], first: dict[str, Any]) -> bool:
    """Whether ``r`` gives ``first``'s result (row count + checksum, predictions, answer)."""
    if name == "pit_join":
        return (r["rows"], r["sha256"]) == (first["rows"], first["sha256"])
    if name == "batch_inference":
        a, b = np.load(r.pop("probabilities")), np.load(first["probabilities"])
        r["max_abs_diff"] = float(np.max(np.abs(a - b))) if len(a) == len(b) else None
        return r["max_abs_diff"] is not None and r["max_abs_diff"] <= 1e-6
    return r["answer"] == first["answer"]


def _table(name: str, rows: list[dict[str, Any]], cores: int) -> None:
    print(f"{name} ({UNITS[name]}):", flush=True)
    print("  raylets  cpus    throughput  speedup  efficiency  physical  same", flush=True)
    for r in rows:
        over = f"  (oversubscribed: {r['cpus']} CPUs on {cores} cores)" if r["cpus"] > cores else ""
        print(
            f"  {r['raylets']:>7}  {r['cpus']:>4}  {r['throughput']:>12,.1f}  {r['speedup']:>6.2f}x"
            f"  {r['efficiency']:>10.2f}  {r['efficiency_physical']:>8.2f}  "
            f"{'yes' if r['identical'] else 'NO'}{over}",
            flush=True,
        )


def main() -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--raylets", default="1,2,4", help="worker raylet counts, comma-separated")
    ap.add_argument("--cpus-total", type=int, default=None, help="CPUs split over the raylets")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per N (best counts)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent serving callers")
    ap.add_argument("--seconds", type=float, default=None, help="serving load per N")
    ap.add_argument("--serve-dims", default="1024,1024", help="served MLP's hidden layers")
    for internal in ("--one", "--cpus-each"):  # one N, in the process the parent starts
        ap.add_argument(internal, type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.repeat = args.repeat or (2 if args.quick else 3)
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's workers run at niceness 15 by default; the driver (the serving callers) at 0.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Serve's replicas log every request; to their log files only, not this bench's stderr.
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    if args.one:
        return run_one(args)

    ns = [int(x) for x in args.raylets.split(",") if x.strip()]
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not ns or min(ns) < 1:
        ap.error("--raylets: positive integers, e.g. 1,2,4")
    if not wanted or set(wanted) - set(WORKLOADS):
        ap.error(f"--workloads: a subset of {','.join(WORKLOADS)}")
    args.workloads = ",".join(wanted)
    cores = os.cpu_count() or 1
    total = args.cpus_total or cores
    if args.quick:
        n_entity, n_rows, n_keys, bi_rows = 200_000, 1_000_000, 50_000, 400_000
    else:
        n_entity, n_rows, n_keys, bi_rows = 1_000_000, 5_000_000, 200_000, 2_000_000
    from bench.batch_inference import make_data, make_model
    from bench.pit_join import make_tables

    work = Path(tempfile.mkdtemp(prefix="raymlp-bench-scaling-"))
    load_before = _load()
    try:
        entity, views = make_tables(n_entity, n_rows, n_keys)
        pq.write_table(entity, work / "entity.parquet")
        for v, table in views.items():
            pq.write_table(table, work / f"view-{v}.parquet")
        make_data(bi_rows, work / "bi-data")
        make_model(work / "bi-data", work / "bi-model")
        print(
            f"{cores} cores, {total} CPUs split over {ns} worker raylets; pit_join "
            f"{n_entity:,} entity rows over {sum(t.num_rows for t in views.values()):,} feature "
            f"rows; batch_inference {bi_rows:,} rows; serving MLP [{args.serve_dims}], "
            f"{args.clients} callers x {args.seconds:g}s; load avg {load_before}",
            flush=True,
        )
        per_n = {n: _run_n(n, max(1, total // n), work, args) for n in ns}
        workloads: dict[str, list[dict[str, Any]]] = {}
        for name in wanted:
            rows = [per_n[n][name] for n in ns]
            for r in rows:
                base = rows[0]
                r["identical"] = _same_as_first(name, r, base) if r is not base else True
                r["speedup"] = r["throughput"] / base["throughput"]
                r["efficiency"] = r["speedup"] / (r["cpus"] / base["cpus"])
                r["efficiency_physical"] = r["speedup"] / (
                    min(r["cpus"], cores) / min(base["cpus"], cores)
                )
            rows[0].pop("probabilities", None)
            _table(name, rows, cores)
            workloads[name] = rows
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours = float(np.mean([rows[-1]["efficiency"] for rows in workloads.values()]))
    physical = float(np.mean([rows[-1]["efficiency_physical"] for rows in workloads.values()]))
    identical = all(r["identical"] for rows in workloads.values() for r in rows)
    print(
        f"mean efficiency at {ns[-1]} raylets: {ours:.2f} (physical {physical:.2f}); results "
        f"identical across N: {identical}; load avg {load_before} -> {_load()}",
        flush=True,
    )
    emit(
        {
            "bench": "scaling",
            "ours": round(ours, 3),
            "anchor": 1.0,
            "ratio": round(ours, 3),
            "unit": "parallel efficiency (1.0 = linear)",
            "efficiency_physical": round(physical, 3),
            "raylets": ns,
            "cpus_total": total,
            "workloads": _rounded(workloads),
            "identical": identical,
            "cpus": cores,
            "load_avg_1m": _load(),
            "load_avg_1m_before": load_before,
        }
    )
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
