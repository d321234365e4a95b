"""The feature store's logic (pure: no actor calls, no SDK/CLI imports).

Modules, one concept each:

- :mod:`.definitions` the registry of entities / feature views / on-demand views, apply plans
- :mod:`.dtypes` feature types, their Arrow spelling and the accepted casts
- :mod:`.validation` a dataset against a view's schema (:class:`~raymlp.errors.SchemaError`)
- :mod:`.offline` Delta tables: create/evolve, write data files, commit, append, time travel
- :mod:`.ingest` the Ray Data ingestion pipeline
- :mod:`.hashing` deterministic key hashing (partitions, online shards)
- :mod:`.asof` the vectorised per-partition as-of join engine
- :mod:`.pit` the distributed point-in-time retrieval plan
- :mod:`.online` the in-memory online store with TTL on read
- :mod:`.lookup` online lookups on the caller's side: planning, shard routing, result rows
- :mod:`.materialize` newest row per entity out of data files
- :mod:`.ondemand` on-demand (request-time) transformations
- :mod:`.examples` the example transformation of ``configs/features/churn.yaml``

The actor (``actors/feature_store.py``) and the SDK (``raymlp.client._features``) sit on top.
"""

from raymlp.features.definitions import FeatureRef, FeatureRegistry, parse_ref

__all__ = ["FeatureRef", "FeatureRegistry", "parse_ref"]
