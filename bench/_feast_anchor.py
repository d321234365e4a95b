"""Feast anchors, run with Feast's own virtualenv (``bench/.venv-feast``): Feast pins pandas 2,
while raymlp runs on pandas 3, so Feast cannot live in the project venv. Never imports raymlp.

    bench/.venv-feast/bin/python bench/_feast_anchor.py online  DATA.parquet N_FEATURES ITERS
    bench/.venv-feast/bin/python bench/_feast_anchor.py offline ENTITY.parquet VIEW.parquet...

Prints one JSON object as its last line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from datetime import timedelta

warnings.filterwarnings("ignore")


def _store(tmp: str):
    from feast import FeatureStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RepoConfig

    cfg = RepoConfig(
        project="bench",
        registry=f"{tmp}/registry.db",
        provider="local",
        online_store=SqliteOnlineStoreConfig(path=f"{tmp}/online.db"),
        entity_key_serialization_version=3,
        repo_path=tmp,
    )
    return FeatureStore(config=cfg)


def _view(name: str, path: str, features: list[str], ttl_days: float, dtype):
    from feast import Entity, FeatureView, Field, FileSource, ValueType

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    src = FileSource(name=f"{name}_src", path=path, timestamp_field="event_timestamp")
    fv = FeatureView(
        name=name,
        entities=[customer],
        ttl=timedelta(days=ttl_days),
        schema=[Field(name=f, dtype=dtype) for f in features],
        online=True,
        source=src,
    )
    return customer, fv


def online(path: str, n_features: int, iters: int) -> dict:
    import numpy as np
    import pandas as pd
    from feast.types import Float64

    df = pd.read_parquet(path)
    feats = [f"f{i}" for i in range(n_features)]
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(tmp)
        customer, fv = _view("stats", path, feats, 3650, Float64)
        store.apply([customer, fv])
        t = time.perf_counter()
        store.write_to_online_store("stats", df)
        load_s = time.perf_counter() - t
        refs = [f"stats:{f}" for f in feats]
        ids = df["customer_id"].to_numpy()
        rng = np.random.default_rng(1)
        out = {"load_s": load_s}
        for batch in (1, 10, 100):
            lat = []
            for i in range(iters + 20):
                rows = [{"customer_id": str(k)} for k in rng.choice(ids, batch)]
                t = time.perf_counter()
                store.get_online_features(features=refs, entity_rows=rows).to_dict()
                if i >= 20:
                    lat.append(time.perf_counter() - t)
            lat.sort()
            out[f"batch_{batch}"] = {
                "p50_ms": lat[len(lat) // 2] * 1000,
                "p99_ms": lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))] * 1000,
            }
        return out


def offline(entity_path: str, view_paths: list[str], ttl_days: float) -> dict:
    import pandas as pd
    from feast.types import Float64

    entity_df = pd.read_parquet(entity_path)
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(tmp)
        objs, refs = [], []
        for i, path in enumerate(view_paths):
            cols = [
                c
                for c in pd.read_parquet(path).columns
                if c not in ("customer_id", "event_timestamp", "_seq")
            ]
            customer, fv = _view(f"v{i}", path, cols, ttl_days, Float64)
            objs += [customer, fv] if i == 0 else [fv]
            refs += [f"v{i}:{c}" for c in cols]
        store.apply(objs)
        t = time.perf_counter()
        df = store.get_historical_features(
            entity_df=entity_df, features=refs, full_feature_names=True
        ).to_df()
        return {"seconds": time.perf_counter() - t, "rows_in": len(entity_df), "rows_out": len(df)}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "online":
        result = online(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        result = offline(sys.argv[2], sys.argv[4:], float(sys.argv[3]))
    print(json.dumps(result))
