"""Online feature lookups: p50/p99 latency of ``get_online_features`` at batch 1, 10 and 100.

Ours: 100k entities x 10 features in the feature_store actor, called from a Ray task (the way a
Serve replica calls it without its near-cache), and through a warm near-cache in the same task
(what a ModelServer replica answers a repeated entity with: ``feature_store.near_cache``, no
actor call). Anchor: Feast's SQLite online store, in-process, same data, same run
(Feast runs from ``bench/.venv-feast`` because it pins pandas 2; the venv is created on first use).

    python -m bench.online_features [--quick]

Last line: ``{"bench": "online_features", "ours": p99 ms at batch 100, "anchor": Feast's,
"ratio": anchor / ours, "unit": "ms", ...}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench._common import emit, parser, percentiles

HERE = Path(__file__).resolve().parent
FEAST_VENV = HERE / ".venv-feast"
N_FEATURES = 10
BATCHES = (1, 10, 100)


def feast_python() -> Path | None:
    """``bench/.venv-feast/bin/python``, creating the venv (pip install feast) if missing."""
    py = FEAST_VENV / "bin" / "python"
    if py.exists():
        return py
    print("creating bench/.venv-feast (pip install feast) ...", flush=True)
    base = "python3.11"
    ok = (
        subprocess.run([base, "-m", "venv", str(FEAST_VENV)]).returncode == 0
        and subprocess.run([str(py), "-m", "pip", "install", "-q", "feast"]).returncode == 0
    )
    return py if ok else None


def make_data(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    cols = {
        "customer_id": pa.array([f"c{i:07d}" for i in range(n)]),
        "event_timestamp": pa.array(
            [now - timedelta(seconds=int(s)) for s in rng.integers(60, 86_400, n)],
            pa.timestamp("us", tz="UTC"),
        ),
    }
    for i in range(N_FEATURES):
        cols[f"f{i}"] = pa.array(rng.random(n))
    return pa.table(cols)


def run_ours(table: pa.Table, iters: int, root: str) -> dict:
    import ray

    import raymlp
    from raymlp.config import PlatformConfig

    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": root},
            "ray": {"address": "local", "num_cpus": 2, "dashboard_port": 8366},
        }
    )
    p = raymlp.connect(config=cfg)
    p.features.apply(
        {
            "entities": [{"name": "customer", "join_keys": ["customer_id"]}],
            "feature_views": [
                {
                    "name": "stats",
                    "entities": ["customer"],
                    "ttl": "3650d",
                    "schema": [{"name": f"f{i}", "dtype": "float64"} for i in range(N_FEATURES)],
                }
            ],
        }
    )
    t = time.perf_counter()
    p.features.ingest("stats", ray.data.from_arrow(table))
    p.features.materialize("stats")
    load_s = time.perf_counter() - t
    ids = table.column("customer_id").to_pylist()

    @ray.remote(num_cpus=0)
    class BareActor:
        """The floor: a plain actor returning a Python dict's values (no features logic)."""

        def __init__(self, table: pa.Table) -> None:
            cols = [table.column(f"f{i}").to_pylist() for i in range(N_FEATURES)]
            self.data = dict(zip(table.column("customer_id").to_pylist(), zip(*cols)))

        def get(self, keys: list[str]) -> list:
            return [self.data.get(k) for k in keys]

    bare = BareActor.remote(table)

    @ray.remote(num_cpus=1)
    def measure(ids: list[str], iters: int, bare) -> dict:
        # A Ray task joins the platform as any replica would (its published config).
        plat = raymlp.connect(create_actors=False)
        refs = [f"stats:f{i}" for i in range(N_FEATURES)]
        rng = np.random.default_rng(1)
        out = {}
        for batch in BATCHES:
            lat, floor = [], []
            for i in range(iters + 50):
                keys = rng.choice(ids, batch).tolist()
                rows = [{"customer_id": k} for k in keys]
                t0 = time.perf_counter()
                res = plat.features.get_online_features(rows, refs)
                t1 = time.perf_counter()
                ray.get(bare.get.remote(keys))
                t2 = time.perf_counter()
                if i >= 50:
                    lat.append(t1 - t0)
                    floor.append(t2 - t1)
            assert all(s == "present" for s in res[0]["_status"].values())
            out[f"batch_{batch}"] = percentiles(lat)
            out[f"bare_actor_batch_{batch}"] = percentiles(floor)
        # The replica's near-cache, warmed with every entity (a replica's working set).
        from raymlp._private.online_cache import NearCache
        from raymlp._private.online_lookup import OnlineLookup
        from raymlp._private.rpc import ActorClient

        ns = plat.config.ray.namespace
        cache = NearCache([ActorClient("feature_store", ns)], plat.caller, max_bytes=2 << 30)
        near = OnlineLookup(ActorClient("feature_store", ns), [], plat.caller, cache.start())
        while not cache.leased(0):
            time.sleep(0.01)
        for i in range(0, len(ids), 1000):
            near.get_online_features([{"customer_id": k} for k in ids[i:i + 1000]], refs)
        for batch in BATCHES:
            lat = []
            for i in range(iters + 50):
                rows = [{"customer_id": k} for k in rng.choice(ids, batch).tolist()]
                t0 = time.perf_counter()
                got = near.get_online_features(rows, refs)
                if i >= 50:
                    lat.append(time.perf_counter() - t0)
            if batch == BATCHES[-1]:  # the same answers as the actor's
                assert got == plat.features.get_online_features(rows, refs)
            out[f"near_batch_{batch}"] = percentiles(lat)
        out["near_cache"] = {k: v for k, v in cache.stats().items() if k != "leased"}
        cache.close()
        return out

    result = ray.get(measure.remote(ids, iters, bare))
    result["load_s"] = load_s
    ray.shutdown()
    return result


def run_feast(table: pa.Table, iters: int, tmp: str) -> dict | None:
    py = feast_python()
    if py is None:
        print("feast unavailable: no anchor", flush=True)
        return None
    path = Path(tmp) / "stats.parquet"
    pq.write_table(table, path)
    proc = subprocess.run(
        [str(py), str(HERE / "_feast_anchor.py"), "online", str(path), str(N_FEATURES), str(iters)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        print("feast failed:", proc.stderr[-2000:], flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=None)
    args = ap.parse_args()
    n = args.entities or (20_000 if args.quick else 100_000)
    iters = 300 if args.quick else 2000
    table = make_data(n)
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_ours(table, iters, str(Path(tmp) / "root"))
        feast = run_feast(table, iters, tmp)
    print(f"{n} entities x {N_FEATURES} features, {iters} lookups per batch size")
    head = ["batch", "ours p50", "ours p99", "feast p50", "feast p99", "bare p50", "bare p99",
            "near p50", "near p99"]
    print(" ".join(f"{h:>10}" for h in head))
    for b in BATCHES:
        o, z, c = ours[f"batch_{b}"], ours[f"bare_actor_batch_{b}"], ours[f"near_batch_{b}"]
        f = (feast or {}).get(f"batch_{b}", {})
        vals = [
            o["p50_ms"],
            o["p99_ms"],
            f.get("p50_ms", float("nan")),
            f.get("p99_ms", float("nan")),
            z["p50_ms"],
            z["p99_ms"],
            c["p50_ms"],
            c["p99_ms"],
        ]
        print(f"{b:>10} " + " ".join(f"{v:>10.3f}" for v in vals))
    print(
        "bare = a plain Ray actor returning dict values for the same keys, measured interleaved "
        "with ours: the floor of one actor round trip; near = the replica's warm near-cache "
        "(no actor call)"
    )
    near_p99 = ours["near_batch_100"]["p99_ms"]
    ours_p99 = ours["batch_100"]["p99_ms"]
    anchor = feast["batch_100"]["p99_ms"] if feast else None
    emit(
        {
            "bench": "online_features",
            "ours": round(ours_p99, 3),
            "anchor": round(anchor, 3) if anchor else None,
            "ratio": round(anchor / ours_p99, 2) if anchor else None,
            "unit": "ms p99 at batch 100 (from a Ray task)",
            "goal": "p99 <= 2 ms and ratio >= 5",
            "entities": n,
            "features": N_FEATURES,
            "bare_actor_p99_ms": round(ours["bare_actor_batch_100"]["p99_ms"], 3),
            "in_replica_p99_ms": round(near_p99, 3),
            "in_replica_goal": "p99 <= 0.5 ms at batch 100 (warm near-cache)",
            "in_replica_ratio_vs_feast": round(anchor / near_p99, 2) if anchor else None,
            "ours_detail": {
                k: {m: round(v, 3) for m, v in d.items()} if isinstance(d, dict) else round(d, 2)
                for k, d in ours.items()
            },
            "feast_detail": feast,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
