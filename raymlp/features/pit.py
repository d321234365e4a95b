"""Distributed point-in-time correct retrieval: entity rows x feature views -> training set.

Plan (a hash-partitioned as-of join on Ray; nothing is collected on the driver):

1. The entity rows (a ``ray.data.Dataset``) are validated, cast and hash-split by join key into
   ``P`` partitions, one Ray task per block (a big block, e.g. a table passed in, by one task
   per CPU, each taking a slice).
2. Views are grouped into waves: views with the same join keys whose estimated rows fit
   ``TARGET_WAVE_BYTES`` (or half the object store). For each view of a wave, the data files of
   the pinned Delta version are scanned by Ray tasks (one per group of files; only the needed
   columns and only rows whose timestamp can match: ``min(entity_ts) - ttl < t <=
   max(entity_ts)``) and hash-split the same way.
3. One task per partition joins the entity rows with that partition's feature rows of every
   view of the wave, encoding the entity keys once (:class:`~raymlp.features.asof.EntityIndex`).
   A wave is scanned once the previous wave's joins are done, so about one wave's rows are in
   memory at a time; views with other join keys re-split the intermediate result by their keys
   first. The last task of a partition runs the on-demand views and orders the columns.
4. The partitions become the blocks of the returned ``ray.data.Dataset``.

Join keys of sensitive entities are stored as tokens (:mod:`~raymlp.features.tokenize`), so the
entity rows' raw values of those keys are tokenized in step 1, before anything is split or
joined; the training set carries the tokens in those columns, never the raw values.

Partitions are sized so that one task's share fits comfortably in a worker
(``target_partition_bytes``); the object store spills what does not fit in memory, so the
tables may be far larger than one worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import ray
import ray.data

from raymlp.errors import SchemaError, ValidationError
from raymlp.features import offline
from raymlp.features.asof import EntityIndex
from raymlp.features.definitions import FeatureRegistry, RetrievalPlan
from raymlp.features.dtypes import SEQ_COLUMN, TS_TYPE, arrow_type, cast_rule, output_column
from raymlp.features.hashing import hash_keys
from raymlp.features.ondemand import apply_on_demand
from raymlp.storage import Storage

if TYPE_CHECKING:
    from raymlp.features.tokenize import Tokenizer

__all__ = ["ViewScan", "historical_features", "check_entity_schema", "sensitive_entity_keys"]

#: Aim for partitions of about this many bytes in memory (entity + feature rows).
TARGET_PARTITION_BYTES = 256 * 1024 * 1024
#: Estimated in-memory bytes of feature rows joined in one wave (views scanned together).
TARGET_WAVE_BYTES = 2 * 1024**3
#: Entity blocks (in total) above this size are split by several tasks when there are fewer
#: blocks than CPUs.
MIN_SHARED_BLOCK_BYTES = 8 * 1024 * 1024
#: Bytes of Parquet (compressed) one scan task reads.
TARGET_SCAN_BYTES = 32 * 1024 * 1024
_DECOMPRESSION = 3.0


@dataclass
class ViewScan:
    """What to read of one view: the Delta version, its files, columns, TTL."""

    view: str
    version: int
    files: list[tuple[str, int]]  # (uri, size in bytes)
    schema: pa.Schema
    keys: list[tuple[str, str]]
    ts_field: str
    features: list[str]
    ttl_us: int

    @property
    def columns(self) -> list[str]:
        return [k for k, _ in self.keys] + [self.ts_field, SEQ_COLUMN] + self.features


@dataclass
class _Wave:
    """Views joined together by one task per partition: they share join keys, and their
    estimated rows fit ``wave_bytes``."""

    keys: list[str]
    resplit: bool  # the join keys differ from the previous wave's
    scans: list[ViewScan] = field(default_factory=list)
    outs: list[dict[str, str]] = field(default_factory=list)
    est_bytes: float = 0.0


def check_entity_schema(
    schema: pa.Schema,
    keys: list[tuple[str, str]],
    ts_field: str,
    request_fields: list[tuple[str, str]],
    outputs: list[str],
) -> None:
    """Entity rows need every join key, a timezone-aware timestamp and the request fields."""
    names = set(schema.names)
    for col, dtype in [*keys, (ts_field, "timestamp"), *request_fields]:
        if col not in names:
            raise SchemaError(
                f"entity_data: column {col!r} is missing (rule: entity rows carry the join keys, "
                f"{ts_field!r} and the request fields; got {sorted(names)})",
                view="entity_data",
                column=col,
                rule="missing column",
            )
        why = cast_rule(schema.field(col).type, dtype)
        if why is not None:
            raise SchemaError(
                f"entity_data: column {col!r}: {why}",
                view="entity_data",
                column=col,
                rule="timestamp without timezone" if "without timezone" in why else "wrong dtype",
            )
    clash = [c for c in outputs if c in names]
    if clash:
        raise SchemaError(
            f"entity_data already has a column {clash[0]!r} (rule: output columns "
            "'view__feature' must not exist in the entity rows)",
            view="entity_data",
            column=clash[0],
            rule="column clash",
        )


def sensitive_entity_keys(registry: FeatureRegistry, plan: RetrievalPlan) -> list[str]:
    """Join key columns of the entity rows stored as tokens by the plan's views; a column that
    one view stores as tokens and another raw is refused (its values could match only one)."""
    sensitive: set[str] = set()
    plain: set[str] = set()
    for v in plan.views:
        sens = set(registry.sensitive_keys(v))
        sensitive |= sens
        plain |= {k for k, _ in registry.key_columns(v) if k not in sens}
    both = sorted(sensitive & plain)
    if both:
        raise ValidationError(
            f"join key {both[0]!r} is sensitive in one requested view and not in another "
            "(rule: a join key is tokenized in every view or in none)",
            field="features",
            value=both[0],
            rule="consistent sensitive join keys",
        )
    return sorted(sensitive)


def _prepare_entities(table: pa.Table, casts: list[tuple[str, pa.DataType]]) -> pa.Table:
    for col, typ in casts:
        i = table.schema.get_field_index(col)
        arr = table.column(i)
        if arr.type != typ:
            if pa.types.is_dictionary(arr.type):
                arr = arr.cast(arr.type.value_type)
            table = table.set_column(i, pa.field(col, typ), arr.cast(typ))
    return table


def _split(table: pa.Table, keys: list[str], parts: int) -> list[pa.Table]:
    if parts == 1:
        return [table]
    if table.num_rows == 0:
        return [table] * parts
    pid = (hash_keys([table.column(k) for k in keys]) % np.uint64(parts)).astype(np.int64)
    # A stable sort of 16-bit ids is a radix sort: 4x faster than on int64 (parts <= 1024).
    order = np.argsort(pid.astype(np.int16), kind="stable")
    bounds = np.searchsorted(pid[order], np.arange(parts + 1))
    shuffled = table.take(pa.array(order))
    return [shuffled.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i])) for i in range(parts)]


def _returns(parts: list[pa.Table]) -> Any:
    return parts[0] if len(parts) == 1 else tuple(parts)


@ray.remote(num_cpus=1)
def _entity_split(
    block: Any,
    casts: list[tuple[str, pa.DataType]],
    ts_field: str,
    keys: list[str],
    parts: int,
    tokenize: tuple[Tokenizer, list[str]] | None = None,
    share: tuple[int, int] = (0, 1),
) -> Any:
    from ray.data.block import BlockAccessor

    table = BlockAccessor.for_block(block).to_arrow()
    i, of = share  # this task's slice of the block (zero-copy)
    if of > 1:
        lo, hi = i * table.num_rows // of, (i + 1) * table.num_rows // of
        table = table.slice(lo, hi - lo)
    table = _prepare_entities(table, casts)
    if tokenize is not None:
        tokenizer, columns = tokenize
        table = tokenizer.tokenize_table(table, columns)
    ts = table.column(ts_field)
    stats = {"rows": table.num_rows, "min": None, "max": None}
    if table.num_rows:
        lo, hi = pc.min_max(ts.cast(pa.int64())).values()
        stats.update(min=lo.as_py(), max=hi.as_py())
    return _returns([*_split(table, keys, parts), stats])


@ray.remote(num_cpus=1)
def _scan_split(
    storage: Storage,
    files: list[str],
    schema: pa.Schema,
    columns: list[str],
    ts_field: str,
    window: tuple[int | None, int | None],
    keys: list[str],
    parts: int,
) -> Any:
    lo, hi = window
    filt = None
    ts = pds.field(ts_field)
    if hi is not None:
        filt = ts <= pa.scalar(hi, pa.int64()).cast(TS_TYPE)
    if lo is not None:
        low = ts > pa.scalar(lo, pa.int64()).cast(TS_TYPE)
        filt = low if filt is None else filt & low
    table = offline.read_files(storage, files, schema, columns, filt)
    return _returns(_split(table, keys, parts))


@ray.remote(num_cpus=1)
def _resplit(table: pa.Table, keys: list[str], parts: int) -> Any:
    return _returns(_split(table, keys, parts))


@ray.remote(num_cpus=1)
def _join(specs: list[dict[str, Any]], counts: list[int], *pieces: pa.Table) -> pa.Table:
    """One partition: the entity rows (``counts[0]`` pieces) joined with each view of a wave
    (``counts[1:]`` pieces each, in ``specs`` order); all views of a wave share join keys."""
    groups, at = [], 0
    for n in counts:
        groups.append(pieces[at : at + n])
        at += n
    entities = _concat(groups[0])
    first = specs[0]
    index = EntityIndex(entities, first["keys"], first["entity_ts"])
    out = entities
    for spec, group in zip(specs, groups[1:]):
        features = _concat([p for p in group if p.num_rows] or list(group[:1]))
        arrays = index.join(
            features,
            keys=spec["keys"],
            feature_ts=spec["feature_ts"],
            columns=spec["columns"],
            ttl_us=spec["ttl_us"],
        )
        for (src, name), col in zip(spec["columns"].items(), arrays):
            out = out.append_column(pa.field(name, features.schema.field(src).type), col)
        del features
    final = specs[-1].get("final")
    if final is not None:
        plan, first_cols = final
        out = apply_on_demand(out, plan)
        rest = [c for c in plan.output_columns if c in out.column_names]
        out = out.select([*first_cols, *rest])
    return out


def _concat(tables: Any) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _num_cpus() -> int:
    try:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    except Exception:
        return 1


def _estimated_bytes(sc: ViewScan) -> float:
    """In-memory bytes of a view's needed columns: Parquet size x decompression x the share
    of its columns read."""
    share = len(sc.columns) / max(1, len(sc.schema.names))
    return sum(s for _, s in sc.files) * _DECOMPRESSION * min(1.0, share)


def _wave_budget() -> float:
    """Estimated feature bytes one wave may hold: ``TARGET_WAVE_BYTES``, or half the
    cluster's object store if that is smaller."""
    try:
        store = float(ray.cluster_resources().get("object_store_memory", 0))
    except Exception:
        store = 0.0
    return min(TARGET_WAVE_BYTES, store / 2) if store else TARGET_WAVE_BYTES


def _file_groups(files: list[tuple[str, int]], min_groups: int) -> list[list[str]]:
    if not files:
        return [[]]
    total = sum(s for _, s in files)
    n = max(min(min_groups, len(files)), math.ceil(total / TARGET_SCAN_BYTES))
    groups: list[list[str]] = [[] for _ in range(min(n, len(files)))]
    sizes = [0] * len(groups)
    for uri, size in sorted(files, key=lambda f: -f[1]):  # greedy balance by size
        i = sizes.index(min(sizes))
        groups[i].append(uri)
        sizes[i] += size
    return groups


def historical_features(
    entity_ds: Any,
    registry: FeatureRegistry,
    plan: RetrievalPlan,
    scans: dict[str, ViewScan],
    storage: Storage,
    *,
    timestamp_field: str = "event_timestamp",
    num_partitions: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> Any:
    """Run the point-in-time join; returns a ``ray.data.Dataset`` (already computed).

    Args:
        entity_ds: ``ray.data.Dataset`` of entity rows (join keys, ``timestamp_field``, request
            fields, and any other columns, e.g. labels, which are carried through).
        scans: one :class:`ViewScan` per feature view of ``plan`` (the pinned versions).
        num_partitions: hash partitions (default: enough for ``TARGET_PARTITION_BYTES`` each,
            at least the cluster's CPU count).
        tokenizer: tokenizes the entity rows' sensitive join keys (needed when a view has
            any; see :func:`sensitive_entity_keys`).
    """
    all_keys: dict[str, str] = {}
    for v in plan.views:
        all_keys.update(dict(scans[v].keys))
    sensitive = sensitive_entity_keys(registry, plan)
    if sensitive and tokenizer is None:
        raise ValueError(f"join keys {sensitive!r} are sensitive: a tokenizer is needed")
    tokenize = (tokenizer, sensitive) if sensitive and tokenizer is not None else None
    request: list[tuple[str, str]] = [(f.name, f.dtype) for f in plan.request_fields]
    schema = entity_ds.schema()
    base = getattr(schema, "base_schema", schema)
    if isinstance(base, pa.Schema):
        check_entity_schema(
            base, list(all_keys.items()), timestamp_field, request, plan.output_columns
        )
        first_cols = list(base.names)
    else:
        first_cols = None
    casts = [(k, arrow_type(t)) for k, t in all_keys.items()] + [(timestamp_field, TS_TYPE)]

    # Waves: views grouped by join keys so that a group shares one split of the entity rows,
    # and cut where their estimated rows would exceed the budget (bounded memory).
    wave_bytes = _wave_budget()
    order: list[str] = sorted(plan.views, key=lambda v: [k for k, _ in scans[v].keys])
    waves: list[_Wave] = []
    for v in order:
        sc = scans[v]
        keys = [k for k, _ in sc.keys]
        est = _estimated_bytes(sc)
        last = waves[-1] if waves else None
        if last is None or last.keys != keys or last.est_bytes + est > wave_bytes:
            last = _Wave(keys, resplit=last is not None and last.keys != keys)
            waves.append(last)
        last.scans.append(sc)
        last.outs.append({f: output_column(v, f) for f in plan.views[v]})
        last.est_bytes += est

    entity_refs = entity_ds.to_arrow_refs()
    est_entity = entity_ds.size_bytes() if hasattr(entity_ds, "size_bytes") else 0
    est_features = sum(_estimated_bytes(sc) for sc in scans.values())
    cpus = _num_cpus()
    parts = num_partitions or max(
        cpus, math.ceil((est_entity + est_features) / TARGET_PARTITION_BYTES)
    )
    parts = max(1, min(parts, 1024))

    first_keys = waves[0].keys
    # Each a list of parts + 1 ObjectRefs (num_returns > 1; Ray's stubs type a single ref).
    # Fewer entity blocks than CPUs (a table passed in is one block): big blocks are split by
    # several tasks, each taking a slice, so the first step does not run on one CPU alone.
    shares = 1
    if entity_refs and len(entity_refs) < cpus and est_entity > MIN_SHARED_BLOCK_BYTES:
        shares = math.ceil(cpus / len(entity_refs))
    split_refs: list[Any] = [
        _entity_split.options(num_returns=parts + 1).remote(
            r, casts, timestamp_field, first_keys, parts, tokenize, (i, shares)
        )
        for r in entity_refs
        for i in range(shares)
    ]
    stats = ray.get([refs[-1] for refs in split_refs])
    if first_cols is None:
        first_cols = list(ray.get(split_refs[0][0]).schema.names) if split_refs else []
    lo = min((s["min"] for s in stats if s["min"] is not None), default=None)
    hi = max((s["max"] for s in stats if s["max"] is not None), default=None)
    # current[p]: the list of refs whose concatenation is partition p of the entity rows.
    current: list[list[Any]] = [[refs[p] for refs in split_refs] for p in range(parts)]
    if not entity_refs:
        empty = pa.table({c: pa.array([], t) for c, t in casts})
        current = [[ray.put(empty)] for _ in range(parts)]

    for i, wave in enumerate(waves):
        keys = wave.keys
        if i > 0:
            # One wave at a time: the previous wave's rows leave the object store before this
            # wave's are scanned, so peak memory is about one wave, not every view.
            ray.wait([c[0] for c in current], num_returns=parts, fetch_local=False)
        if wave.resplit:
            # One ObjectRef, or a list of ``parts`` of them (Ray's stubs type only the first).
            pieces: list[Any] = [
                _resplit.options(num_returns=parts).remote(ref, keys, parts)
                for p in range(parts)
                for ref in current[p]
            ]
            pieces = [[x] if parts == 1 else list(x) for x in pieces]
            current = [[piece[p] for piece in pieces] for p in range(parts)]
        # per view of the wave: a list (one per scan task) of `parts` refs
        view_refs: list[list[list[Any]]] = []
        specs: list[dict[str, Any]] = []
        for sc, outs in zip(wave.scans, wave.outs):
            window = (None if lo is None or sc.ttl_us <= 0 else lo - sc.ttl_us, hi)
            feature_refs = []
            for group in _file_groups(sc.files, cpus):
                out: Any = _scan_split.options(num_returns=parts).remote(  # ref(s), as above
                    storage, group, sc.schema, sc.columns, sc.ts_field, window, keys, parts
                )
                feature_refs.append([out] if parts == 1 else list(out))
            view_refs.append(feature_refs)
            specs.append(
                {
                    "keys": keys,
                    "entity_ts": timestamp_field,
                    "feature_ts": sc.ts_field,
                    "columns": outs,
                    "ttl_us": sc.ttl_us,
                }
            )
        if i == len(waves) - 1:
            specs[-1]["final"] = (plan, first_cols)
        current = [
            [
                _join.remote(
                    specs,
                    [len(current[p]), *(len(fr) for fr in view_refs)],
                    *current[p],
                    *[refs[p] for fr in view_refs for refs in fr],
                )
            ]
            for p in range(parts)
        ]
        del view_refs  # the join tasks hold them; freed as soon as each task is done

    joined = ray.data.from_arrow_refs([c[0] for c in current])
    joined.set_name("raymlp-historical-features")  # its name in the Ray dashboard
    return joined
