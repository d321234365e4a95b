"""Point-in-time join: 1M entity rows x 3 views x 10 features over 5M feature rows (7-day TTL).

Ours: ``p.features.get_historical_features`` over the views' Delta tables (Ray tasks, hash
partitions, vectorised as-of engine). Anchor: DuckDB's ``ASOF LEFT JOIN`` over the same Parquet
files, in a subprocess (its peak RSS is measured there), with the same TTL rule. The results are
compared row by row. Feast's file offline store runs on a slice of the entity rows (it is slow)
from ``bench/.venv-feast``, with the row count it returns.

    python -m bench.pit_join [--quick] [--skip-feast]

Last line: ``{"bench": "pit_join", "ours": s, "anchor": DuckDB s, "ratio": anchor / ours,
"identical": bool, "ours_peak_mb", "duckdb_peak_mb", "tables_mb", ...}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench._common import emit, parser

HERE = Path(__file__).resolve().parent
VIEWS = ("v0", "v1", "v2")
N_FEATURES = 10
TTL_DAYS = 7
SPAN_US = 90 * 86_400 * 1_000_000
T0_US = 1_700_000_000 * 1_000_000
TS = pa.timestamp("us", tz="UTC")


def make_tables(
    n_entity: int, n_feature_rows: int, n_keys: int, seed: int = 0
) -> tuple[pa.Table, dict[str, pa.Table]]:
    rng = np.random.default_rng(seed)
    names = np.array([f"c{i:07d}" for i in range(n_keys)], dtype=object)
    per_view = n_feature_rows // len(VIEWS)
    views = {}
    for v in VIEWS:
        keys = rng.integers(0, n_keys, per_view)
        ts = T0_US + rng.integers(0, SPAN_US, per_view)
        # Unique (key, ts) pairs, so that DuckDB (whose ASOF tie order is unspecified) and we
        # must agree exactly.
        _, first = np.unique(keys.astype(np.int64) * SPAN_US + (ts - T0_US), return_index=True)
        keys, ts = keys[first], ts[first]
        cols = {
            "customer_id": pa.array(names[keys], pa.string()),
            "event_timestamp": pa.array(ts, pa.int64()).cast(TS),
        }
        for i in range(N_FEATURES):
            cols[f"f{i}"] = pa.array(rng.standard_normal(len(keys)))
        views[v] = pa.table(cols)
    entity = pa.table(
        {
            "row_id": pa.array(np.arange(n_entity), pa.int64()),
            "customer_id": pa.array(names[rng.integers(0, n_keys, n_entity)], pa.string()),
            "event_timestamp": pa.array(
                T0_US + rng.integers(0, SPAN_US + 10 * 86_400_000_000, n_entity), pa.int64()
            ).cast(TS),
        }
    )
    return entity, views


class PeakMemory:
    """Peak total PSS (proportional set size: shared pages such as Ray's object store counted
    once) of this process and every process of the local Ray node, sampled every 100 ms."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self) -> list:
        import ray

        procs = [self._psutil.Process()]
        node = ray._private.worker.global_worker.node
        for infos in node.all_processes.values():
            for info in infos:
                try:
                    p = self._psutil.Process(info.process.pid)
                    procs.append(p)
                    procs += p.children(recursive=True)
                except Exception:
                    pass
        return procs

    def sample(self) -> int:
        total = 0
        for p in self._procs():
            try:
                total += p.memory_full_info().pss
            except Exception:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(0.1)

    def __enter__(self) -> PeakMemory:
        self.baseline = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_ours(
    entity: pa.Table, views: dict[str, pa.Table], root: str, num_partitions: int | None
) -> dict:
    import ray

    import raymlp
    from raymlp.config import PlatformConfig

    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": root},
            "ray": {"address": "local", "num_cpus": 2, "dashboard_port": 8368},
        }
    )
    p = raymlp.connect(config=cfg)
    p.features.apply(
        {
            "entities": [{"name": "customer", "join_keys": ["customer_id"]}],
            "feature_views": [
                {
                    "name": v,
                    "entities": ["customer"],
                    "ttl": f"{TTL_DAYS}d",
                    "online": False,
                    "schema": [{"name": f"f{i}", "dtype": "float64"} for i in range(N_FEATURES)],
                }
                for v in VIEWS
            ],
        }
    )
    t = time.perf_counter()
    for v, table in views.items():
        chunks = table.to_batches(max_chunksize=250_000)
        p.features.ingest(v, ray.data.from_arrow([pa.Table.from_batches([c]) for c in chunks]))
    ingest_s = time.perf_counter() - t
    files = {v: p.features.describe(v)["table"]["uri"] for v in VIEWS}
    feats = [f"{v}:f{i}" for v in VIEWS for i in range(N_FEATURES)]

    def once() -> tuple[float, list]:
        t = time.perf_counter()
        ds = p.features.get_historical_features(entity, feats, num_partitions=num_partitions)
        refs = ds.to_arrow_refs()
        ray.wait(refs, num_returns=len(refs))
        return time.perf_counter() - t, refs

    # A warm-up run (worker pool), two timed runs (best kept), then one run under the memory
    # sampler (kept apart: sampling every process's PSS costs CPU and would skew the time).
    times = [once()[0] for _ in range(3)]
    with PeakMemory() as mem:
        _, result = once()
    out = pa.concat_tables(ray.get(result))
    import raymlp.features.offline as offline

    data_files = {v: offline.file_uris(p.storage, v)[1] for v in VIEWS}
    ray.shutdown()
    return {
        "seconds": min(times[1:]),
        "runs": times,
        "ingest_s": ingest_s,
        "table": out,
        "peak_mb": (mem.peak - mem.baseline) / 2**20,
        "files": data_files,
        "uris": files,
    }


DUCKDB_SCRIPT = r"""
import json, sys, time, resource
import duckdb
args = json.loads(sys.argv[1])
con = duckdb.connect()
con.execute("SET TimeZone='UTC'")
con.execute("SET enable_progress_bar=false")
con.execute(f"CREATE VIEW e AS SELECT * FROM read_parquet('{args['entity']}')")
for v, files in args["files"].items():
    lst = ", ".join(f"'{f}'" for f in files)
    con.execute(f"CREATE VIEW {v} AS SELECT * FROM read_parquet([{lst}])")
sel, joins = [], []
for v in args["files"]:
    for i in range(args["n_features"]):
        sel.append(f"CASE WHEN {v}.event_timestamp > e.event_timestamp - INTERVAL "
                   f"{args['ttl_days']} DAY THEN {v}.f{i} END AS {v}__f{i}")
    joins.append(f"ASOF LEFT JOIN {v} ON e.customer_id = {v}.customer_id "
                 f"AND e.event_timestamp >= {v}.event_timestamp")
q = "SELECT e.row_id, " + ", ".join(sel) + " FROM e " + " ".join(joins)
best = None
for _ in range(2):
    t = time.perf_counter()
    res = con.execute(q)
    out = res.to_arrow_table() if hasattr(res, "to_arrow_table") else res.fetch_arrow_table()
    dt = time.perf_counter() - t
    best = dt if best is None else min(best, dt)
import pyarrow.parquet as pq
pq.write_table(out, args["out"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("\n" + json.dumps({"seconds": best, "peak_mb": peak, "rows": out.num_rows}))
"""


def run_duckdb(entity: pa.Table, files: dict[str, list[str]], tmp: str) -> dict:
    epath = f"{tmp}/entity.parquet"
    pq.write_table(entity, epath)
    args = {
        "entity": epath,
        "files": files,
        "n_features": N_FEATURES,
        "ttl_days": TTL_DAYS,
        "out": f"{tmp}/duckdb.parquet",
    }
    proc = subprocess.run(
        [sys.executable, "-c", DUCKDB_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"duckdb failed: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["table"] = pq.read_table(args["out"])
    return res


def compare(ours: pa.Table, duck: pa.Table) -> tuple[bool, int]:
    ours = ours.sort_by("row_id")
    duck = duck.sort_by("row_id")
    if ours.num_rows != duck.num_rows:
        return False, abs(ours.num_rows - duck.num_rows)
    bad = 0
    for name in duck.column_names:
        a, b = ours.column(name).combine_chunks(), duck.column(name).combine_chunks()
        same = pc.or_kleene(pc.equal(a, b), pc.and_(pc.is_null(a), pc.is_null(b)))
        bad += int(pc.sum(pc.invert(pc.fill_null(same, False))).as_py() or 0)
    return bad == 0, bad


def run_feast(entity: pa.Table, views: dict[str, pa.Table], tmp: str) -> dict | None:
    from bench.online_features import feast_python

    py = feast_python()
    if py is None:
        return None
    epath = f"{tmp}/feast_entity.parquet"
    pq.write_table(entity.select(["customer_id", "event_timestamp"]), epath)
    paths = []
    for v, table in views.items():
        path = f"{tmp}/feast_{v}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    try:
        proc = subprocess.run(
            [str(py), str(HERE / "_feast_anchor.py"), "offline", epath, str(TTL_DAYS), *paths],
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": None, "note": "did not finish in 900 s"}
    if proc.returncode != 0:
        return {"seconds": None, "note": proc.stderr.strip().splitlines()[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--skip-feast", action="store_true")
    ap.add_argument("--partitions", type=int, default=None)
    args = ap.parse_args()
    if args.quick:
        n_entity, n_rows, n_keys, n_feast = 200_000, 1_000_000, 50_000, 20_000
    else:
        n_entity, n_rows, n_keys, n_feast = 1_000_000, 5_000_000, 200_000, 100_000
    load_before = round(os.getloadavg()[0], 2)
    entity, views = make_tables(n_entity, n_rows, n_keys)
    tables_mb = (entity.nbytes + sum(t.nbytes for t in views.values())) / 2**20
    print(
        f"{n_entity} entity rows x {len(VIEWS)} views x {N_FEATURES} features over "
        f"{sum(t.num_rows for t in views.values())} feature rows ({tables_mb:.0f} MB in "
        f"Arrow), ttl {TTL_DAYS}d",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_ours(entity, views, f"{tmp}/root", args.partitions)
        print(
            f"ours:   {ours['seconds']:.2f} s (runs {[round(x, 2) for x in ours['runs']]}), "
            f"peak +{ours['peak_mb']:.0f} MB (ingest {ours['ingest_s']:.1f} s)",
            flush=True,
        )
        duck = run_duckdb(entity, ours["files"], tmp)
        print(f"duckdb: {duck['seconds']:.2f} s, peak RSS {duck['peak_mb']:.0f} MB", flush=True)
        identical, mismatches = compare(ours["table"], duck["table"])
        matched = sum(ours["table"].column(f"{v}__f0").null_count for v in VIEWS)
        print(
            f"identical to DuckDB: {identical} ({mismatches} mismatching values); "
            f"rows {ours['table'].num_rows}; null (no match within TTL) values per view avg "
            f"{matched / len(VIEWS):.0f}",
            flush=True,
        )
        feast = None
        if not args.skip_feast:
            sub = entity.slice(0, n_feast)
            feast = run_feast(sub, views, tmp)
            if feast and feast.get("seconds"):
                duck_sub = run_duckdb(sub, ours["files"], tmp)
                feast["duckdb_same_rows_s"] = duck_sub["seconds"]
                print(
                    f"feast ({n_feast} entity rows): {feast['seconds']:.2f} s vs DuckDB "
                    f"{duck_sub['seconds']:.2f} s; returned {feast['rows_out']} of "
                    f"{feast['rows_in']} rows",
                    flush=True,
                )
            else:
                print(f"feast: {feast}", flush=True)
    emit(
        {
            "bench": "pit_join",
            "ours": round(ours["seconds"], 3),
            "anchor": round(duck["seconds"], 3),
            "ratio": round(duck["seconds"] / ours["seconds"], 3),
            "unit": "s wall (lower is better); ratio = duckdb / ours",
            "goal": "identical to DuckDB, ratio >= 1.0 at 1M entity rows, ours_peak_mb <= "
            "duckdb_peak_mb / 2",
            "load_avg_1m_before": load_before,
            "load_avg_1m_after": round(os.getloadavg()[0], 2),
            "identical": identical,
            "mismatches": mismatches,
            "entity_rows": n_entity,
            "feature_rows": sum(t.num_rows for t in views.values()),
            "tables_mb": round(tables_mb),
            "ours_peak_mb": round(ours["peak_mb"]),
            "duckdb_peak_mb": round(duck["peak_mb"]),
            "feast": feast,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
