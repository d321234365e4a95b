"""Serving benchmark: our ``/v1/predictions`` against a bare Ray Serve no-op, batching gains,
and the response cache — in one run, on loopback, with a real async HTTP load generator.

    python -m bench.serving [--quick] [--ingress both|haproxy|proxy]

Each part runs behind Serve's HAProxy ingress and again behind its Python proxy (a fresh cluster
each: the ingress is fixed when a cluster starts), ours and the anchor in the same mode; the
headline figures are the HAProxy run's (the default ingress), ``by_ingress`` holds both.

1. **Overhead** (anchor: a bare Serve FastAPI deployment that returns a constant, with
   ``max_ongoing_requests=64``): p50/p99 and requests/s at 1 and 32 concurrent clients, against
   our gateway → model server path with the churn MLP (cache off, every request a new input).
   Goals: p50 at 1 client ≤ anchor + 3 ms; throughput at 32 clients ≥ 50% of the anchor's.
2. **Batching** at 64 concurrent clients, ``@serve.batch`` on vs off, for the churn MLP and a heavy MLP (single-row forward ≥ 3 ms), through
   the ModelServer's DeploymentHandle and through HTTP. Goals (heavy): ≥ 3× handle, ≥ 1.5× HTTP.
3. **Cache**: p50 of hits (a repeated input) vs misses (new inputs), 1 client.

The last line is one JSON object with ``p50_overhead_ms_1``, ``throughput_ratio_32``,
``batching_gain_handle_heavy``, ``batching_gain_http_heavy``, ``batching_gain_http_churn``,
``cache_speedup`` and the raw figures behind them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
from typing import Any

from bench._common import emit, parser, percentiles

CHURN_DIMS = [64, 32]
#: candidates for the heavy model, smallest first: the first whose single-row forward takes at
#: least ``--heavy-ms`` on this machine is used. Batching pays off where the model, not the
#: per-request overhead of Serve (≈ 2-3 ms of replica CPU per request on 2 busy cores), is the
#: cost: the default of 8 ms keeps a 3 ms-or-more model well clear of that overhead.
HEAVY_CANDIDATES = [
    [2048, 2048],
    [3072, 3072],
    [2048, 2048, 2048],
    [4096, 4096],
    [3072, 3072, 3072],
    [4096, 4096, 4096],
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_load(
    url: str, bodies: Any, clients: int, seconds: float, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """``clients`` concurrent loops posting ``bodies(i)`` for ``seconds``; latency + rate."""
    import httpx

    lat: list[float] = []
    gateway: list[float] = []  # the gateway's own latency_ms, when the answer carries it
    errors = 0
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        await asyncio.gather(
            *(c.post(url, json=bodies(-k - 1), headers=headers) for k in range(min(clients, 8)))
        )  # warm connections
        stop = time.perf_counter() + seconds
        counter = [0]

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                counter[0] += 1
                t = time.perf_counter()
                r = await c.post(url, json=bodies(counter[0]), headers=headers)
                lat.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors += 1
                elif (inner := r.json().get("latency_ms")) is not None:
                    gateway.append(inner / 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    out = {
        **percentiles(lat),
        "rps": len(lat) / elapsed,
        "requests": len(lat),
        "errors": errors,
        "clients": clients,
    }
    if gateway:
        out["gateway_p50_ms"] = percentiles(gateway)["p50_ms"]
    return out


async def handle_load(handle: Any, items: Any, clients: int, seconds: float) -> dict[str, Any]:
    """The same, through a DeploymentHandle (no HTTP, no gateway)."""
    lat: list[float] = []
    stop = time.perf_counter() + seconds
    counter = [0]

    async def loop() -> None:
        while time.perf_counter() < stop:
            counter[0] += 1
            t = time.perf_counter()
            await handle.remote(items(counter[0]))
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(handle.remote(items(-k - 1)) for k in range(4)))
    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return {
        **percentiles(lat),
        "rps": len(lat) / (time.perf_counter() - t0),
        "requests": len(lat),
        "clients": clients,
    }


def _mean_batch(before: dict[str, Any], after: dict[str, Any]) -> float:
    """Mean batch size between two ModelServer ``stats()`` snapshots of one replica."""
    n = after["batches"] - before["batches"]
    items = (
        after["mean_batch_size"] * after["batches"] - before["mean_batch_size"] * before["batches"]
    )
    return items / n if n > 0 else 0.0


def _histogram(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Batch sizes between two ModelServer ``stats()`` snapshots, in power-of-two bins."""
    was = before.get("batch_size_histogram", {})
    bins: dict[str, int] = {}
    for size, count in after.get("batch_size_histogram", {}).items():
        n = count - was.get(size, 0)
        if n > 0:
            lo = 1 << (int(size).bit_length() - 1)
            key = f"{lo}" if lo == 1 else f"{lo}-{2 * lo - 1}"
            bins[key] = bins.get(key, 0) + n
    return dict(sorted(bins.items(), key=lambda kv: int(kv[0].split("-")[0])))


def _show(name: str, r: dict[str, Any]) -> None:
    extra = [f"{r['requests']} requests"]
    if r.get("errors"):
        extra.append(f"{r['errors']} errors")
    if "mean_batch_size" in r:
        extra.append(f"mean batch {r['mean_batch_size']:.1f}")
    if r.get("batch_sizes"):
        extra.append(f"batch sizes {r['batch_sizes']}")
    if r.get("max_inflight_in_replica"):
        extra.append(f"most in flight in the replica so far {r['max_inflight_in_replica']}")
    if r.get("gateway_p50_ms"):
        extra.append(f"in-gateway p50 {r['gateway_p50_ms']:.2f} ms")
    print(
        f"  {name:34} {r['clients']:>3} clients  p50 {r['p50_ms']:7.2f} ms  p99 "
        f"{r['p99_ms']:7.2f} ms  {r['rps']:8.1f} req/s  ({', '.join(extra)})",
        flush=True,
    )


def single_row_ms(dims: list[int]) -> float:
    """Median single-row ``predict_proba`` time of an MLP with ``dims``, one torch thread."""
    import statistics

    import torch

    from raymlp.predictor.artifact import load_predictor
    from raymlp.serving.examples import example_features, make_artifact

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        pred = load_predictor(make_artifact(d, hidden_dims=dims))
    rows = [example_features(3)]
    for _ in range(3):
        pred.predict_proba(rows)
    times = []
    for _ in range(40):
        t = time.perf_counter()
        pred.predict_proba(rows)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def heavy_dims(target_ms: float) -> tuple[list[int], float]:
    for dims in HEAVY_CANDIDATES:
        ms = single_row_ms(dims)
        if ms >= target_ms:
            return dims, ms
    return dims, ms


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument(
        "--heavy-ms",
        type=float,
        default=8.0,
        help="single-row forward time the heavy model must reach (>= 3)",
    )
    ap.add_argument(
        "--ingress", choices=("both", "haproxy", "proxy"), default="both",
        help="Serve's HTTP ingress: each measured in a fresh cluster (default: both, in turn)",
    )
    args = ap.parse_args()
    if args.ingress == "both":
        return _both_ingresses()
    secs = 3.0 if args.quick else 8.0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from raymlp._private.serve_ingress import cluster_env

    # before Ray starts: its processes read Serve's ingress from the environment (the flag
    # wins over an exported RAY_SERVE_ENABLE_HA_PROXY: each run measures the mode it names)
    os.environ.update(cluster_env(args.ingress, free_port=_free_port))
    import ray
    from fastapi import FastAPI
    from ray import serve

    from raymlp.client import connect
    from raymlp.config import PlatformConfig
    from raymlp.predictor.artifact import read_json
    from raymlp.serving.app import MODEL_SERVER
    from raymlp.serving.examples import example_features, make_artifact

    heavy, heavy_ms = heavy_dims(max(3.0, args.heavy_ms))
    print(f"heavy MLP {heavy}: single-row forward {heavy_ms:.2f} ms", flush=True)

    tmp = tempfile.mkdtemp(prefix="raymlp-bench-serving-")
    cfg = PlatformConfig.model_validate(
        {"storage": {"root": f"{tmp}/root"}, "registry": {"approval_required": False}}
    )
    # Our own local Ray (no dashboard: its fixed port may be taken by another cluster).
    # address="local": never attach to another cluster that happens to run on this machine.
    ray.init(
        address="local",
        namespace=cfg.ray.namespace,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    p = connect(config=cfg)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    for name, dims in (("churn", CHURN_DIMS), ("heavy", heavy)):
        art = make_artifact(f"{tmp}/{name}", seed=1, hidden_dims=dims)
        v = p.registry.register(name, art, signature=read_json(art, "signature"))
        p.registry.promote(name, v, "production")

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"

    # -- the anchor: a bare Serve FastAPI no-op --------------------------------------------------
    noop = FastAPI()

    @serve.deployment(max_ongoing_requests=64, num_replicas=1)
    @serve.ingress(noop)
    class NoOp:
        @noop.post("/")
        async def root(self, body: dict) -> dict:
            return {"prediction": "stay", "probability": 0.5}

    serve.run(NoOp.bind(), name="noop", route_prefix="/noop")

    app_cfg: dict[str, Any] = {
        "name": "bench",
        "http": {"host": "127.0.0.1", "port": port},
        "models": [{"name": "churn"}, {"name": "heavy"}],
        "gateway": {"num_replicas": 1, "num_cpus": 0, "max_ongoing_requests": 256},
        "model_server": {
            "num_replicas": 1,
            "num_cpus": 0,
            "max_ongoing_requests": 128,
            "batching": {"max_batch_size": 64, "batch_wait_timeout_s": 0.005},
        },
        "fallback_server": {"enabled": False},
        "timeouts": {"primary_s": 60.0},  # measure throughput, not timeouts
        "cache": {"enabled": False},
        "prediction_log": {"enabled": False},
    }
    t = time.perf_counter()
    url = p.serve.deploy(app_cfg)
    print(f"deployed our application in {time.perf_counter() - t:.1f}s at {url}", flush=True)

    def body(model: str):
        return lambda i: {"model_id": model, "features": example_features(i)}

    def run(coro: Any) -> dict[str, Any]:
        return asyncio.run(coro)

    out: dict[str, Any] = {
        "bench": "serving",
        "ingress": args.ingress,
        "unit": "req/s",
        "seconds_per_point": secs,
        "heavy_single_row_ms": heavy_ms,
        "heavy_hidden_dims": heavy,
    }
    print("1. overhead vs a bare Serve no-op", flush=True)
    res: dict[str, dict[str, Any]] = {}
    for clients in (1, 32):
        res[f"noop_{clients}"] = run(http_load(f"{base}/noop/", lambda i: {"x": i}, clients, secs))
        _show("bare Serve no-op (anchor)", res[f"noop_{clients}"])
        res[f"ours_{clients}"] = run(
            http_load(f"{base}/v1/predictions", body("churn"), clients, secs)
        )
        _show("ours /v1/predictions (churn)", res[f"ours_{clients}"])
    out["p50_overhead_ms_1"] = res["ours_1"]["p50_ms"] - res["noop_1"]["p50_ms"]
    out["throughput_ratio_32"] = res["ours_32"]["rps"] / res["noop_32"]["rps"]

    print("2. batching at 64 clients (@serve.batch on vs off)", flush=True)
    server = serve.get_deployment_handle(MODEL_SERVER, "bench")
    for mode in ("on", "off"):
        app_cfg["model_server"]["batching"]["enabled"] = mode == "on"
        p.serve.deploy(app_cfg)
        for model in ("churn", "heavy"):
            h = server.options(multiplexed_model_id=f"{model}:1", method_name="predict")
            before = server.stats.remote().result()
            r = run(handle_load(h, lambda i: {"features": example_features(i)}, 64, secs))
            after = server.stats.remote().result()
            r["mean_batch_size"] = _mean_batch(before, after)
            r["batch_sizes"] = _histogram(before, after)
            r["max_inflight_in_replica"] = after.get("max_inflight_seen")
            res[f"handle_{model}_{mode}"] = r
            _show(f"handle {model} batching {mode}", r)
            r = run(http_load(f"{base}/v1/predictions", body(model), 64, secs))
            last = server.stats.remote().result()
            r["mean_batch_size"] = _mean_batch(after, last)
            r["batch_sizes"] = _histogram(after, last)
            res[f"http_{model}_{mode}"] = r
            _show(f"HTTP {model} batching {mode}", r)
    for via in ("handle", "http"):
        for model in ("churn", "heavy"):
            out[f"batching_gain_{via}_{model}"] = (
                res[f"{via}_{model}_on"]["rps"] / res[f"{via}_{model}_off"]["rps"]
            )

    print("3. response cache (1 client)", flush=True)
    app_cfg["model_server"]["batching"]["enabled"] = True
    app_cfg["cache"] = {"enabled": True, "ttl": "10m"}
    p.serve.deploy(app_cfg)
    res["cache_miss"] = run(http_load(f"{base}/v1/predictions", body("churn"), 1, secs))
    _show("cache misses (new inputs)", res["cache_miss"])
    fixed = {"model_id": "churn", "features": example_features(7)}
    res["cache_hit"] = run(http_load(f"{base}/v1/predictions", lambda i: fixed, 1, secs))
    _show("cache hits (one repeated input)", res["cache_hit"])
    out["cache_speedup"] = res["cache_miss"]["p50_ms"] / res["cache_hit"]["p50_ms"]
    out["cache_speedup_in_gateway"] = (
        res["cache_miss"]["gateway_p50_ms"] / res["cache_hit"]["gateway_p50_ms"]
    )

    out["raw"] = {
        k: {m: round(v, 3) if isinstance(v, float) else v for m, v in r.items()}
        for k, r in res.items()
    }
    out["ours"] = res["ours_32"]["rps"]
    out["anchor"] = res["noop_32"]["rps"]
    out["ratio"] = out["throughput_ratio_32"]
    out["mean_batch_handle_heavy"] = res["handle_heavy_on"]["mean_batch_size"]
    out["batch_sizes_handle_heavy"] = res["handle_heavy_on"]["batch_sizes"]
    out["batch_sizes_http_heavy"] = res["http_heavy_on"]["batch_sizes"]
    max_batch = app_cfg["model_server"]["batching"]["max_batch_size"]
    out["goals"] = {  # issue 15's table
        "p50_overhead_ms_1<=1.5": out["p50_overhead_ms_1"] <= 1.5,
        "throughput_ratio_32>=0.8": out["throughput_ratio_32"] >= 0.8,
        "batching_gain_handle_heavy>=3": out["batching_gain_handle_heavy"] >= 3,
        "batching_gain_http_heavy>=2": out["batching_gain_http_heavy"] >= 2,
        "mean_batch_handle_heavy>=max_batch/2": out["mean_batch_handle_heavy"] >= max_batch / 2,
        "cache_speedup>=3": out["cache_speedup"] >= 3,
    }
    print(
        f"overhead at 1 client {out['p50_overhead_ms_1']:+.2f} ms; throughput at 32 clients "
        f"{out['throughput_ratio_32']:.2f}x the no-op; batching gain heavy "
        f"{out['batching_gain_handle_heavy']:.2f}x handle / "
        f"{out['batching_gain_http_heavy']:.2f}x HTTP, churn "
        f"{out['batching_gain_http_churn']:.2f}x HTTP; cache {out['cache_speedup']:.2f}x",
        flush=True,
    )
    serve.shutdown()
    ray.shutdown()
    emit(out)


#: figures compared across the two ingresses
_ACROSS = ("p50_overhead_ms_1", "throughput_ratio_32", "batching_gain_http_heavy",
           "batching_gain_handle_heavy", "cache_speedup")


def _both_ingresses() -> None:
    """This bench once per ingress, each in a fresh process (the ingress is fixed when a
    cluster starts); the last line holds both, the HAProxy run — the default — as headline."""
    import json
    import subprocess
    import sys

    args: list[str] = []
    skip = False
    for a in sys.argv[1:]:  # everything but --ingress X / --ingress=X
        if skip:
            skip = False
        elif a == "--ingress":
            skip = True
        elif not a.startswith("--ingress="):
            args.append(a)
    runs: dict[str, dict[str, Any]] = {}
    for mode in ("haproxy", "proxy"):
        print(f"== ingress {mode} ==", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.serving", *args, "--ingress", mode],
            capture_output=True, text=True,
        )
        lines = proc.stdout.strip().splitlines()
        for line in lines[:-1]:
            print(f"  {line}", flush=True)
        if proc.returncode != 0 or not lines:
            print(proc.stderr[-2000:], flush=True)
            raise SystemExit(f"bench.serving --ingress {mode} failed ({proc.returncode})")
        runs[mode] = json.loads(lines[-1])
    head = dict(runs["haproxy"])
    head["ingress"] = "both"
    head["by_ingress"] = {m: {k: r.get(k) for k in (*_ACROSS, "raw")} for m, r in runs.items()}
    head["haproxy_over_proxy"] = {
        "p50_ms_1": runs["haproxy"]["raw"]["ours_1"]["p50_ms"]
        / runs["proxy"]["raw"]["ours_1"]["p50_ms"],
        "rps_32": runs["haproxy"]["raw"]["ours_32"]["rps"] / runs["proxy"]["raw"]["ours_32"]["rps"],
    }
    print(
        "ours behind haproxy vs behind Serve's proxy: p50 at 1 client "
        f"{runs['haproxy']['raw']['ours_1']['p50_ms']:.2f} vs "
        f"{runs['proxy']['raw']['ours_1']['p50_ms']:.2f} ms; req/s at 32 clients "
        f"{runs['haproxy']['raw']['ours_32']['rps']:.0f} vs "
        f"{runs['proxy']['raw']['ours_32']['rps']:.0f}",
        flush=True,
    )
    emit(head)


if __name__ == "__main__":
    main()
