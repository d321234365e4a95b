"""Batch inference: an entity table → features → a pool of predictor actors → a Delta table.

One Ray Data pipeline, nothing collected on the driver:

1. read the entity table (Parquet/CSV file or directory, or a Delta table at a pinned version);
2. join the model's features with ``p.features.get_historical_features`` — point-in-time (as of
   each row's timestamp) or the latest values (as of one time, default now), with the feature
   tables pinned to the versions in force when the job starts;
3. :class:`BatchPredictor` scores on the driver's warm predictor pool for the model
   (:mod:`raymlp.inference.pool`: actors that keep the model loaded for the next run; the
   default) or, with ``warm_pool: false``, in ``map_batches`` on a Ray Data actor pool started
   for the run (``concurrency`` actors, one GPU each when asked for and present): each actor
   loads the model version once with :func:`~raymlp.predictor.artifact.load_predictor`, scores
   each block ``batch_size`` rows at a time with ``predict_proba`` — the preprocessing code of
   training and serving — and writes the block's predictions as Parquet files into
   ``<root>/predictions/<output>`` itself (no second pass over the rows, no extra processes);
4. the driver commits the files in one Delta transaction whose metadata holds the lineage
   record (model version, feature table versions, input, rows). A failed run commits nothing
   and removes its files.

Example::

    cfg = load_config_file(BatchPredictJobConfig, "configs/jobs/batch_predict_churn.yaml")
    result = run_batch_prediction(p, cfg)
    result.rows, result.table_version, result.lineage["feature_versions"]
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from raymlp.config import BatchPredictJobConfig
from raymlp.errors import ValidationError, find_raymlp_error
from raymlp.features.dtypes import TS_TYPE
from raymlp.inference import predictions_table as ptable
from raymlp.inference.model import feature_column, input_refs, labels_for, resolve_model
from raymlp.inference.model import with_model_inputs as _with_inputs
from raymlp.storage import Storage

__all__ = [
    "BatchPredictor",
    "BatchPredictionResult",
    "PredictionFiles",
    "file_prefix",
    "read_entities",
    "spread_blocks",
    "predict_dataset",
    "write_predictions",
    "run_batch_prediction",
    "OUTPUT_COLUMNS",
]

#: Columns every predictions row gets, after the entity columns.
OUTPUT_COLUMNS = (
    "probability",
    "prediction",
    "model_name",
    "model_version",
    "run_id",
    "run_timestamp",
)
_AS_OF_COL = "__raymlp_as_of"


def read_entities(path: str, version: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The entity table as a ``ray.data.Dataset`` and ``{"uri", "format", "version"}``.

    A Delta table is read at ``version`` (default: the latest, resolved now and recorded);
    anything else is a Parquet or CSV file or directory. Same reader as training's.
    """
    from raymlp.training.data import read_table

    return read_table(path, version, field_prefix="")


@dataclass(frozen=True)
class PredictionFiles:
    """Where :class:`BatchPredictor` writes: uncommitted Parquet files ``<prefix>-*`` of the
    predictions table ``name``, at most ``rows_per_file`` rows each."""

    storage: Storage
    name: str
    prefix: str
    rows_per_file: int = 250_000


def file_prefix(txn_id: str) -> str:
    """The name prefix of a run's data files (what a failed run deletes)."""
    return f"part-{txn_id}"


class BatchPredictor:
    """The stateful ``map_batches`` class: loads one model version per actor, scores batches.

    Each call takes a pyarrow batch (entity columns + ``view__feature`` columns) and returns
    the ``keep`` columns plus :data:`OUTPUT_COLUMNS` — or, with ``write_to``, writes those rows
    as Parquet files and returns one ``{"file": <json meta>}`` row per file. ``score_rows``
    bounds the rows of one ``predict_proba`` call (a whole block may come in at once).
    """

    def __init__(
        self,
        artifact_uri: str,
        *,
        refs: dict[str, str],
        keep: list[str],
        model_name: str,
        model_version: int,
        run_id: str,
        run_timestamp_us: int,
        variant: str = "fp32",
        device: str = "cpu",
        torch_threads: int = 1,
        score_rows: int | None = None,
        write_to: PredictionFiles | None = None,
        digests: dict[str, str] | None = None,
        factory_modules: list[str] | None = None,
    ) -> None:
        import torch

        from raymlp.predictor.artifact import load_predictor

        # One intra-op thread per CPU the actor holds: actors share the node, not oversubscribe.
        torch.set_num_threads(max(1, torch_threads))
        # The registered digests are verified, as in serving: a rewritten file is refused.
        self.predictor = load_predictor(
            artifact_uri,
            variant=variant,
            device=device,
            digests=digests,
            factory_modules=factory_modules,
        )
        self._set_run(
            refs=refs,
            keep=keep,
            model_name=model_name,
            model_version=model_version,
            run_id=run_id,
            run_timestamp_us=run_timestamp_us,
            score_rows=score_rows,
            write_to=write_to,
        )

    @classmethod
    def from_loaded(cls, predictor: Any, **run: Any) -> BatchPredictor:
        """A BatchPredictor over an already loaded predictor (a warm pool's actor), with the
        run's settings (``refs``, ``keep``, ``model_name``, ... as for the constructor)."""
        self = cls.__new__(cls)
        self.predictor = predictor
        self._set_run(**run)
        return self

    def _set_run(
        self,
        *,
        refs: dict[str, str],
        keep: list[str],
        model_name: str,
        model_version: int,
        run_id: str,
        run_timestamp_us: int,
        score_rows: int | None = None,
        write_to: PredictionFiles | None = None,
    ) -> None:
        self.refs, self.keep = dict(refs), list(keep)
        self.model_name, self.model_version = model_name, int(model_version)
        self.run_id, self.run_ts = run_id, int(run_timestamp_us)
        self.score_rows, self.write_to = score_rows, write_to

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.write_to is None:
            return self.score(batch)
        w = self.write_to
        step = self.score_rows or batch.num_rows or 1
        scored = [self.score(batch.slice(i, step)) for i in range(0, batch.num_rows, step)]
        files = []
        if scored:
            out = pa.concat_tables(scored)
            for i in range(0, out.num_rows, w.rows_per_file):
                meta = ptable.write_file(w.storage, w.name, out.slice(i, w.rows_per_file),
                                         w.prefix)
                if meta:
                    files.append(json.dumps(meta))
        return pa.table({"file": pa.array(files, pa.string())})

    def score(self, batch: pa.Table) -> pa.Table:
        """The predictions rows of ``batch``."""
        n = batch.num_rows
        proba = self.predictor.predict_proba(_with_inputs(batch, self.refs))
        out = batch.select(self.keep)
        # All-null columns read as type null; Delta needs a concrete type.
        for i, f in enumerate(out.schema):
            if pa.types.is_null(f.type):
                out = out.set_column(
                    i, pa.field(f.name, pa.string()), out.column(i).cast(pa.string())
                )
        cols = {
            "probability": pa.array(proba, pa.float64()),
            "prediction": labels_for(proba, self.predictor.class_names, self.predictor.threshold),
            "model_name": pa.array([self.model_name] * n, pa.string()),
            "model_version": pa.array(np.full(n, self.model_version, np.int64)),
            "run_id": pa.array([self.run_id] * n, pa.string()),
            "run_timestamp": pa.array(np.full(n, self.run_ts, np.int64)).cast(TS_TYPE),
        }
        for name, arr in cols.items():
            out = out.append_column(name, arr)
        return out


def spread_blocks(ds: Any, concurrency: int | tuple[int, int], per_actor: int = 4) -> Any:
    """``ds`` computed, in at least ``per_actor`` blocks per predictor actor.

    An actor scores whole blocks, so a dataset read as one big block (Ray Data may combine
    small files into one read task) would keep every actor but one idle. Computing the input
    first also keeps its read tasks from waiting for CPUs the actor pool holds.
    """
    most = concurrency if isinstance(concurrency, int) else concurrency[1]
    ds = ds.materialize()
    if ds.num_blocks() < per_actor * most:
        ds = ds.repartition(per_actor * most).materialize()
    return ds


def predict_dataset(
    ds: Any,
    artifact_uri: str,
    *,
    refs: dict[str, str],
    keep: list[str],
    model_name: str,
    model_version: int,
    run_id: str,
    run_timestamp: datetime,
    variant: str = "fp32",
    batch_size: int = 1024,
    concurrency: int | tuple[int, int] = 2,
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    write_to: PredictionFiles | None = None,
    digests: dict[str, str] | None = None,
    factory_modules: list[str] | None = None,
    warm_pool: bool = False,
) -> Any:
    """``ds`` (entity + feature columns) → a lazy dataset of predictions (:class:`BatchPredictor`
    on an actor pool of ``concurrency`` actors; ``num_gpus`` puts each on a GPU share).

    With ``write_to`` the actors write the predictions themselves, a block at a time
    (``batch_size`` rows per model call), and the dataset is of file records for
    :func:`write_predictions` to commit. ``digests`` (the registered artifact digests) and
    ``factory_modules`` (the allowed factory modules) are checked by every actor at load.

    ``warm_pool``: score on this driver's warm pool of predictor actors for the model
    (:mod:`raymlp.inference.pool`: loaded once, reused by the next run) instead of a Ray Data
    actor pool started for this run; ``ds`` is computed first and each of its blocks is one
    call."""
    from ray.data import ActorPoolStrategy

    device = "cuda" if num_gpus else "cpu"
    # The run's settings, the same for a warm actor's call and a Ray Data actor's constructor.
    run = {
        "refs": refs,
        "keep": keep,
        "model_name": model_name,
        "model_version": model_version,
        "run_id": run_id,
        "run_timestamp_us": int(run_timestamp.timestamp() * 1_000_000),
        "score_rows": batch_size,
        "write_to": write_to,
    }
    if warm_pool:
        from raymlp.inference.pool import predictor_pool

        pool_size = concurrency if isinstance(concurrency, int) else concurrency[1]
        warm = predictor_pool(
            artifact_uri,
            size=pool_size,
            variant=variant,
            device=device,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            digests=digests,
            factory_modules=factory_modules,
        )
        try:
            return warm.map_dataset(ds, run, size=pool_size)
        except BaseException as e:
            if write_to is not None:  # as write_predictions does for a failed Ray Data run
                ptable.delete_files(write_to.storage, write_to.name, write_to.prefix)
            cause = find_raymlp_error(e)
            if cause is not None:
                raise cause from None
            raise
    if isinstance(concurrency, int):
        pool = ActorPoolStrategy(size=concurrency)
    else:
        pool = ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    return ds.map_batches(
        BatchPredictor,
        fn_constructor_kwargs={
            "artifact_uri": artifact_uri,
            **run,
            "variant": variant,
            "device": device,
            "torch_threads": max(1, int(num_cpus)),
            "digests": digests,
            "factory_modules": factory_modules,
        },
        # Writing: whole blocks per call (one file each, not one per batch_size rows).
        batch_size=None if write_to is not None else batch_size,
        batch_format="pyarrow",
        compute=pool,
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
    )


def write_predictions(
    ds: Any,
    storage: Storage,
    name: str,
    *,
    txn_id: str,
    metadata: dict[str, str],
    lineage: dict[str, Any] | None = None,
) -> tuple[int | None, int]:
    """Run the pipeline ``ds`` — :func:`predict_dataset` with
    ``write_to=PredictionFiles(storage, name, file_prefix(txn_id))``, whose actors write the
    files — and commit its files to the predictions table ``name`` in one transaction carrying
    ``metadata`` and ``lineage`` (with ``rows`` filled in). Returns ``(table version, rows)``;
    ``(None, 0)`` when there was nothing to write. Nothing is committed (and no file is left)
    on failure."""
    prefix = file_prefix(txn_id)
    ds.context.raise_original_map_exception = True
    ds.set_name(f"raymlp-predictions-{name}")  # how the run shows in the Ray dashboard
    try:
        files = [json.loads(r["file"]) for r in ds.take_all()]
    except BaseException as e:
        ptable.delete_files(storage, name, prefix)
        cause = find_raymlp_error(e)
        if cause is not None:
            raise cause from None
        raise
    if not files:
        return None, 0
    rows = sum(f["num_records"] for f in files)
    meta = {**metadata, "raymlp.rows": str(rows)}
    if lineage is not None:
        meta[ptable.LINEAGE_KEY] = json.dumps({**lineage, "rows": rows}, default=str)
    try:
        version = ptable.commit_files(storage, name, files, txn_id=txn_id, metadata=meta)
    except BaseException:
        ptable.discard_uncommitted(storage, name, prefix, txn_id)
        raise
    return version, rows


@dataclass
class BatchPredictionResult:
    """What a batch prediction run wrote (``lineage`` is also in the Delta commit)."""

    output_uri: str
    table_version: int | None
    rows: int
    model_name: str
    model_version: int
    run_id: str
    feature_versions: dict[str, int]
    duration_s: float
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _schema_names(ds: Any) -> list[str] | None:
    schema = ds.schema()
    base = getattr(schema, "base_schema", schema)
    return list(base.names) if isinstance(base, pa.Schema) else None


def _check_columns(cfg: BatchPredictJobConfig, names: list[str] | None, need_ts: bool) -> None:
    if names is None:
        return
    have = set(names)
    checks = [("entity_keys", c) for c in cfg.entity_keys]
    checks += [("passthrough_columns", c) for c in cfg.passthrough_columns]
    if need_ts:
        checks.append(("timestamp_column", cfg.timestamp_column))
    for fld, col in checks:
        if col not in have:
            raise ValidationError(
                f"{fld}: column {col!r} is not in the entity table (rule: an existing column; "
                f"got {sorted(have)})",
                field=fld,
                value=col,
                rule="existing column",
            )


def _gpus(cfg: BatchPredictJobConfig, say: Callable[[str], None]) -> float | None:
    if not cfg.use_gpu:
        return None
    import ray

    if ray.cluster_resources().get("GPU", 0) > 0:
        return cfg.num_gpus
    say("use_gpu: the cluster has no GPU, scoring on CPU")
    return None


def run_batch_prediction(
    platform: Any, cfg: BatchPredictJobConfig, *, say: Callable[[str], None] = print
) -> BatchPredictionResult:
    """Run the whole job (see the module docstring) as ``platform.principal``."""
    from raymlp.predictor.artifact import read_json

    t0 = time.monotonic()
    run_ts = datetime.now(UTC)
    run_id = f"{run_ts.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
    mv = resolve_model(platform, cfg.model)
    spec = read_json(mv.artifact_uri, "spec")
    inputs = [c["name"] for c in read_json(mv.artifact_uri, "preprocessor")["columns"]]
    refs = input_refs(spec, cfg.features, inputs)
    say(f"model: {mv.name} v{mv.version} ({mv.artifact_uri}), {len(refs)} feature refs")

    entities, entity_info = read_entities(cfg.entity_table, cfg.entity_table_version)
    names = _schema_names(entities)
    _check_columns(cfg, names, need_ts=cfg.feature_mode == "point_in_time")
    missing = [i for i in inputs if i not in refs and names is not None and i not in names]
    if missing:
        raise ValidationError(
            f"model input {missing[0]!r} is neither a feature ref nor an entity table column "
            "(rule: every model input is joined or given)",
            field="features",
            value=missing[0],
            rule="model input available",
        )

    ref_list = sorted(set(refs.values()))
    as_of = None
    if not ref_list:
        joined, feature_versions = entities, {}
    else:
        ts_field = cfg.timestamp_column
        if cfg.feature_mode == "latest":
            as_of = datetime.fromisoformat(cfg.as_of) if cfg.as_of else run_ts
            as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
            as_of_us = int(as_of.timestamp() * 1_000_000)
            entities = entities.map_batches(
                lambda b: b.append_column(
                    _AS_OF_COL, pa.array(np.full(b.num_rows, as_of_us, np.int64)).cast(TS_TYPE)
                ),
                batch_format="pyarrow",
            )
            ts_field = _AS_OF_COL
        say(f"features: {cfg.feature_mode} join of {len(ref_list)} refs")
        joined = platform.features.get_historical_features(
            entities, ref_list, as_of_versions=cfg.as_of_versions, timestamp_field=ts_field
        )
        feature_versions = dict(platform.features.versions_of(joined))
        say(f"features: table versions {feature_versions}")

    keep = [*cfg.entity_keys]
    has_ts = cfg.timestamp_column in names if names is not None else not as_of
    if has_ts and cfg.timestamp_column not in keep:
        keep.append(cfg.timestamp_column)
    keep += [c for c in cfg.passthrough_columns if c not in keep]
    if cfg.include_features:
        keep += [feature_column(r) for r in ref_list if feature_column(r) not in keep]

    num_gpus = _gpus(cfg, say)
    txn_id = f"batch-{run_id}"
    pool = "warm pool" if cfg.warm_pool else "Ray Data actor pool"
    say(f"scoring: {cfg.concurrency} predictor actor(s) ({pool}), batch size {cfg.batch_size}")
    predictions = predict_dataset(
        spread_blocks(joined, cfg.concurrency),
        mv.artifact_uri,
        refs=refs,
        keep=keep,
        model_name=mv.name,
        model_version=mv.version,
        run_id=run_id,
        run_timestamp=run_ts,
        variant=cfg.model.variant,
        batch_size=cfg.batch_size,
        concurrency=cfg.concurrency,
        num_cpus=cfg.num_cpus,
        num_gpus=num_gpus,
        write_to=PredictionFiles(
            platform.storage, cfg.output, file_prefix(txn_id), cfg.rows_per_file
        ),
        digests=mv.digests,
        factory_modules=list(platform.config.registry.model_factory_modules),
        warm_pool=cfg.warm_pool,
    )
    lineage: dict[str, Any] = {
        "run_id": run_id,
        "run_timestamp": run_ts.isoformat(),
        "principal": platform.principal.name,
        "model": {
            "name": mv.name,
            "version": mv.version,
            "alias": None if cfg.model.version is not None else cfg.model.alias,
            "variant": cfg.model.variant,
            "artifact_uri": mv.artifact_uri,
        },
        "feature_mode": cfg.feature_mode,
        "features": ref_list,
        "feature_versions": feature_versions,
        "as_of": as_of.isoformat() if as_of else None,
        "entity_table": entity_info,
        "output": ptable.table_uri(platform.storage, cfg.output),
        "device": "cuda" if num_gpus else "cpu",
    }
    version, rows = write_predictions(
        predictions,
        platform.storage,
        cfg.output,
        txn_id=txn_id,
        metadata={
            "raymlp.op": "batch_predict",
            "raymlp.run_id": run_id,
            "raymlp.model": mv.name,
            "raymlp.model_version": str(mv.version),
        },
        lineage=lineage,
    )
    lineage["rows"] = rows
    return BatchPredictionResult(
        output_uri=ptable.table_uri(platform.storage, cfg.output),
        table_version=version,
        rows=rows,
        model_name=mv.name,
        model_version=mv.version,
        run_id=run_id,
        feature_versions=feature_versions,
        duration_s=round(time.monotonic() - t0, 2),
        lineage=lineage,
    )
