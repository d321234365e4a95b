"""Online lookups on the caller's side: request planning, key extraction, shard routing and
result assembly (including on-demand views). Pure: the SDK does the actor calls in between.

Example::

    plan = OnlinePlan(registry, ("customer_profile:tenure_months",))
    key_cols, key_sets = entity_keys(plan, [{"customer_id": "c1"}])
    views = <actor>.online_read(key_sets, plan.requests, serial)["views"]
    rows = assemble(plan, views, key_cols, [{"customer_id": "c1"}])

Join keys of sensitive entities are stored as tokens: with a ``tokenizer`` the key sets carry
the tokens of the raw values the rows hold (the result rows keep the caller's raw values).
Without one, the feature store actor tokenizes raw keys itself; only shard routing (which
hashes the stored key) needs the tokens here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from raymlp.errors import SchemaError, ValidationError
from raymlp.features.definitions import FeatureRegistry, RetrievalPlan
from raymlp.features.dtypes import arrow_type, output_column
from raymlp.features.hashing import hash_keys
from raymlp.features.ondemand import run_on_demand
from raymlp.features.online import STATUS_NAMES
from raymlp.features.tokenize import Tokenizer

__all__ = ["OnlinePlan", "StatusMap", "entity_keys", "shard_of", "route", "merge", "assemble"]

_STATUS = np.array(STATUS_NAMES, dtype=object)


class StatusMap(dict):
    """``{column: status}`` of one result row: a read-only dict (rows with the same statuses
    share one), so it JSON-encodes and pickles like a dict but cannot be changed in place."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("feature statuses are read-only (copy with dict(row['_status']))")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _readonly  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (StatusMap, (dict(self),))


class OnlinePlan:
    """A resolved online request: key sets, one request per view, on-demand steps (cached).

    ``requests`` are ``(view, features, index into key_sets)``; views sharing join keys share a
    key set, so the keys travel once.
    """

    def __init__(
        self,
        reg: FeatureRegistry,
        features: tuple[str, ...],
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.plan: RetrievalPlan = reg.plan_retrieval(list(features))
        self.key_sets: list[list[tuple[str, str]]] = []
        self.requests: list[tuple[str, list[str], int]] = []
        self.dtypes: dict[str, str] = {}
        #: Each view's TTL in µs (0: none), what a near-cache expires rows by.
        self.ttl_us: dict[str, int] = {}
        self.tokenizer = tokenizer
        #: Join key columns stored as tokens (those of sensitive entities).
        self.sensitive: set[str] = set()
        for view, feats in self.plan.views.items():
            fv = reg.view(view)
            if not fv.online:
                raise ValidationError(
                    f"view {view!r} is not served online (rule: online: true)",
                    field="features",
                    value=view,
                    rule="online view",
                )
            keys = reg.key_columns(fv)
            self.sensitive.update(reg.sensitive_keys(fv))
            if keys not in self.key_sets:
                self.key_sets.append(keys)
            self.requests.append((view, feats, self.key_sets.index(keys)))
            self.ttl_us[view] = int(fv.ttl.total_seconds() * 1e6)
            types = {f.name: f.dtype for f in fv.features}
            self.dtypes.update({output_column(view, f): types[f] for f in feats})
        self.columns = self.plan.output_columns
        self.views = list(self.plan.views)


def num_rows(entity_rows: Any) -> int:
    if isinstance(entity_rows, Mapping):
        return len(next(iter(entity_rows.values()))) if entity_rows else 0
    return len(entity_rows)


def entity_keys(plan: OnlinePlan, entity_rows: Any) -> tuple[dict[str, list[Any]], list[Any]]:
    """``(key columns by name, one key list per key set)``; keys are cast to the key type
    (a string key given as 12345 looks up "12345"), and sensitive keys become their tokens in
    the key sets when the plan has a tokenizer (the key columns keep the raw values)."""
    columnar = isinstance(entity_rows, Mapping)
    key_sets: list[Any] = []
    key_cols: dict[str, list[Any]] = {}
    stored: dict[str, list[Any]] = {}
    tok = plan.tokenizer
    for keys in plan.key_sets:
        cols = []
        for k, dtype in keys:
            if k not in key_cols:
                try:
                    raw = entity_rows[k] if columnar else [r[k] for r in entity_rows]
                except KeyError:
                    raise SchemaError(
                        f"entity rows: join key {k!r} is missing (rule: every row carries the "
                        "join keys)",
                        view="entity_rows",
                        column=k,
                        rule="missing column",
                    ) from None
                caster = str if dtype == "string" else int
                try:
                    key_cols[k] = [v if type(v) is caster else caster(v) for v in raw]
                    if caster is int and any(not _INT64[0] <= v <= _INT64[1] for v in key_cols[k]):
                        raise OverflowError(k)
                except (TypeError, ValueError, OverflowError):
                    bad = next(v for v in raw if not _castable(v, caster))
                    raise ValidationError(
                        f"entity rows: join key {k!r} value {bad!r} is not a {dtype} "
                        f"(rule: join keys of type {dtype})",
                        field=k,
                        value=repr(bad),
                        rule=f"{dtype} join key",
                    ) from None
                stored[k] = (
                    tok.tokens(key_cols[k])
                    if tok is not None and k in plan.sensitive
                    else key_cols[k]
                )
            cols.append(stored[k])
        key_sets.append(cols[0] if len(cols) == 1 else list(zip(*cols)))
    return key_cols, key_sets


_INT64 = (-(2**63), 2**63 - 1)


def _castable(v: Any, caster: type) -> bool:
    try:
        out = caster(v)
    except (TypeError, ValueError, OverflowError):
        return False
    return caster is not int or _INT64[0] <= out <= _INT64[1]


def shard_of(plan: OnlinePlan, key_sets: list[Any], shards: int) -> list[np.ndarray]:
    """The shard of every key, per key set (int64 arrays)."""
    if plan.sensitive and plan.tokenizer is None and shards > 1:
        # Shards hold entities by the hash of the stored key (the token): routing raw values
        # would ask the wrong shard and read "not found".
        raise ValidationError(
            f"join keys {sorted(plan.sensitive)!r} are sensitive and the lookup has no "
            "tokenizer (rule: sharded lookups of sensitive keys tokenize before routing)",
            field="features",
            value=sorted(plan.sensitive),
            rule="tokenizer for sharded sensitive lookups",
        )
    routes: list[np.ndarray] = []
    for ks, keys in zip(key_sets, plan.key_sets):
        cols = [ks] if len(keys) == 1 else [list(c) for c in zip(*ks)] if ks else [[]] * len(keys)
        arrs = [
            pa.array(c, type=pa.string() if t == "string" else pa.int64())
            for c, (_, t) in zip(cols, keys)
        ]
        routes.append(
            (hash_keys(arrs) % np.uint64(shards)).astype(np.int64)
            if len(ks)
            else np.zeros(0, dtype=np.int64)
        )
    return routes


def route(plan: OnlinePlan, key_sets: list[Any], shards: int) -> list[tuple[list, list]]:
    """Per shard: ``(row positions per key set, the key sets restricted to them)``."""
    routes = shard_of(plan, key_sets, shards)
    out = []
    for s in range(shards):
        idx = [np.flatnonzero(r == s) for r in routes]
        out.append((idx, [[ks[i] for i in ix.tolist()] for ks, ix in zip(key_sets, idx)]))
    return out


def merge(plan: OnlinePlan, n: int, parts: list[tuple[list, dict[str, Any]]]) -> dict[str, Any]:
    """Scatter the shards' ``online_read`` views back into request order."""
    merged: dict[str, Any] = {
        view: (np.zeros(n, dtype=np.uint8), {f: [None] * n for f in feats})
        for view, feats, _ in plan.requests
    }
    for idx, views in parts:
        for view, feats, ks_i in plan.requests:
            st, vals = views[view]
            pos = idx[ks_i]
            merged[view][0][pos] = np.frombuffer(st, dtype=np.uint8)
            for f in feats:
                target = merged[view][1][f]
                for j, v in zip(pos.tolist(), vals[f]):
                    target[j] = v
    return {v: (st.tobytes(), vals) for v, (st, vals) in merged.items()}


def _on_demand(
    plan: OnlinePlan,
    entity_rows: Any,
    n: int,
    values: dict[str, list[Any]],
    status: dict[str, list[str]],
) -> None:
    columnar = isinstance(entity_rows, Mapping)
    data: dict[str, pa.Array] = {}
    for f in plan.plan.request_fields:
        present = f.name in entity_rows if columnar else all(f.name in r for r in entity_rows)
        if not present:
            raise SchemaError(
                f"entity rows: request field {f.name!r} is missing (rule: on-demand views need "
                "their request fields)",
                view="entity_rows",
                column=f.name,
                rule="missing column",
            )
        raw = entity_rows[f.name] if columnar else [r[f.name] for r in entity_rows]
        data[f.name] = pa.array(raw, type=arrow_type(f.dtype))
    for col, dtype in plan.dtypes.items():
        data[col] = pa.array(values[col], type=arrow_type(dtype))
    table = pa.table(data)
    for odfv, outputs in plan.plan.on_demand:
        worst = ["present"] * n
        for src in odfv.sources:
            for i, st in enumerate(status[output_column(*src.split(":", 1))]):
                if st == "expired" or (st == "not_found" and worst[i] == "present"):
                    worst[i] = st
        for col, arr in run_on_demand(odfv, table, outputs).items():
            values[col] = arr.to_pylist()
            status[col] = worst


def assemble(
    plan: OnlinePlan,
    views: dict[str, Any],
    key_cols: dict[str, list[Any]],
    entity_rows: Any,
    format: str = "rows",
) -> Any:
    """Row dicts (or columns) from the actor's per-view ``(statuses, values)``."""
    n = num_rows(entity_rows)
    values: dict[str, list[Any]] = {}
    status: dict[str, list[str]] = {}
    for view, feats, _ in plan.requests:
        st_bytes, vals = views[view]
        names = _STATUS[np.frombuffer(st_bytes, dtype=np.uint8)].tolist()
        for f in feats:
            col = output_column(view, f)
            values[col] = vals[f]
            status[col] = names
    if plan.plan.on_demand:
        _on_demand(plan, entity_rows, n, values, status)
    out_cols = plan.columns
    if format == "columns":
        return {
            "columns": {**key_cols, **{c: values[c] for c in out_cols}},
            "status": {c: status[c] for c in out_cols},
        }
    if format != "rows":
        raise ValidationError(
            f"format {format!r} is not known (rule: 'rows' or 'columns')",
            field="format",
            value=format,
            rule="rows|columns",
        )
    names = [*key_cols, *out_cols]
    lists = [*key_cols.values(), *(values[c] for c in out_cols)]
    rows = [dict(zip(names, vals)) for vals in zip(*lists)]
    # Features of one view share one status list: a row's statuses are a combination of a few
    # values, so rows share one read-only StatusMap per combination (cheaper than a dict per
    # row; read-only so that sharing is safe).
    unique: list[list[str]] = []
    where: list[int] = []
    for c in out_cols:
        lst = status[c]
        idx = next((i for i, u in enumerate(unique) if u is lst), -1)
        if idx < 0:
            unique.append(lst)
            idx = len(unique) - 1
        where.append(idx)
    shared: dict[tuple[str, ...], StatusMap] = {}
    for row, combo in zip(rows, zip(*unique)):
        st = shared.get(combo)
        if st is None:
            st = shared[combo] = StatusMap({c: combo[i] for c, i in zip(out_cols, where)})
        row["_status"] = st
    return rows
