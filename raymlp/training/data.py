"""The training set: read the labelled entity table, split by entity, fit the preprocessing on
train, and turn each split into the tensors the Ray Train workers stream.

The split is a seeded hash of the entity key, so it is deterministic (same seed → same split,
whatever the row order or batching), and every row of an entity lands in the same split — no
entity's history leaks from train into validation or test::

    >>> import pyarrow as pa
    >>> from raymlp.training.data import split_codes
    >>> t = pa.table({"customer_id": ["a", "b", "a"]})
    >>> codes = split_codes(t, ["customer_id"], seed=42, fractions=(0.7, 0.15, 0.15))
    >>> codes[0] == codes[2]
    True

Everything runs as Ray Data pipelines (``map_batches``); the preprocessor is fitted by streaming
the train split once, and the datasets handed to Ray Train are materialized once and shared by
every Tune trial (each worker reads its own shard through ``get_dataset_shard``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlp import _constants
from raymlp.errors import SchemaError, ValidationError
from raymlp.predictor.preprocessing import Preprocessor, PreprocessorFitter, category_key

if TYPE_CHECKING:
    import ray.data

    from raymlp.config import PreprocessingConfig, TrainDatasetConfig

__all__ = [
    "SPLITS",
    "LABEL_COL",
    "SPLIT_COL",
    "read_table",
    "split_codes",
    "label_values",
    "PreparedData",
    "prepare_data",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
LABEL_COL = "__label"
SPLIT_COL = "__split"
_KEY_SEP = "\x1f"


def read_table(
    path: str, version: int | None = None, *, field_prefix: str = "dataset."
) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """Read a Parquet/CSV file or directory, or a Delta table, as a Ray Dataset.

    Returns the dataset and ``{"uri", "format", "version"}`` (the Delta version actually read:
    the latest is resolved and pinned, so re-reading gives the same rows). Errors name
    ``<field_prefix>entity_table`` / ``<field_prefix>entity_table_version``.
    """
    import ray.data

    local = "://" not in path or path.startswith("file://")
    local_path = path[len("file://") :] if path.startswith("file://") else path
    if local and not os.path.exists(local_path):
        raise ValidationError(
            f"entity table {path!r} does not exist (rule: an existing file, directory or Delta "
            "table)",
            field=f"{field_prefix}entity_table",
            value=path,
            rule="exists",
        )
    is_delta = (local and os.path.isdir(os.path.join(local_path, "_delta_log"))) or (
        not local and version is not None
    )
    if is_delta:
        from deltalake import DeltaTable

        if version is None:
            version = DeltaTable(path).version()
        return ray.data.read_delta(path, version=version), {
            "uri": path,
            "format": "delta",
            "version": int(version),
        }
    if version is not None:
        raise ValidationError(
            f"entity_table_version {version} given but {path!r} is not a Delta table",
            field=f"{field_prefix}entity_table_version",
            value=version,
            rule="Delta table",
        )
    lower = local_path.lower().rstrip("/")
    if lower.endswith((".csv", ".csv.gz")):
        return ray.data.read_csv(path), {"uri": path, "format": "csv", "version": None}
    info = {"uri": path, "format": "parquet", "version": None}
    small = _read_small_parquet(path)
    if small is not None:
        return small, info
    return ray.data.read_parquet(path), info


#: Rows per block of a table read by the driver (several blocks: every actor of a pool works).
_DRIVER_BLOCK_ROWS = 131_072


def _read_small_parquet(path: str) -> ray.data.Dataset | None:
    """A Parquet file or directory no larger than ``RAYMLP_DRIVER_READ_MAX_MB``, read here in
    one pass and split into blocks; None when it is larger (or not listable here)."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs
    import ray.data

    limit = _constants.driver_read_max_bytes()
    if limit <= 0:
        return None
    try:
        fs, base = pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))
        top = fs.get_file_info(base)
        if top.type == pafs.FileType.Directory:
            files = [f for f in fs.get_file_info(pafs.FileSelector(base, recursive=True))
                     if f.type == pafs.FileType.File]
        else:
            files = [top]
        if sum(f.size or 0 for f in files) > limit:
            return None
        table = pads.dataset(base, filesystem=fs, format="parquet", partitioning="hive").to_table()
    except (OSError, ValueError):
        return None  # let Ray Data's reader report the problem
    blocks = [table.slice(i, _DRIVER_BLOCK_ROWS)
              for i in range(0, table.num_rows, _DRIVER_BLOCK_ROWS)] or [table]
    return ray.data.from_arrow(blocks)


def split_codes(
    keys: pa.Table, entity_keys: Sequence[str], seed: int, fractions: Sequence[float]
) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) per row, from a seeded hash of the entity key."""
    cols = [keys.column(k).to_pylist() for k in entity_keys]
    salt = f"raymlp-split:{seed}".encode()
    t_cut = fractions[0]
    v_cut = fractions[0] + fractions[1]
    out = np.empty(keys.num_rows, dtype=np.int8)
    for i, vals in enumerate(zip(*cols)):
        key = _KEY_SEP.join(category_key(v) or "" for v in vals).encode()
        h = hashlib.blake2b(key, digest_size=8, key=salt).digest()
        u = int.from_bytes(h, "big") / 2.0**64
        out[i] = 0 if u < t_cut else (1 if u < v_cut else 2)
    return out


def label_values(col: pa.ChunkedArray | pa.Array, positive: Any) -> np.ndarray:
    """Label column → float32 1.0 (== ``positive``), 0.0 (anything else), NaN (missing)."""
    t = col.type
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t):
        if isinstance(positive, str):
            raise ValidationError(
                f"positive_label {positive!r} is a string but the label column is {t}",
                field="dataset.positive_label",
                value=positive,
                rule="same type as the label",
            )
        x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        y = (x == float(positive)).astype(np.float32)
        y[np.isnan(x)] = np.nan
        return y
    keys = [category_key(v) for v in col.to_pylist()]
    pos = category_key(positive)
    return np.array([np.nan if k is None else float(k == pos) for k in keys], dtype=np.float32)


def _split_and_label(
    batch: pa.Table,
    *,
    entity_keys: list[str],
    label_column: str,
    positive: Any,
    seed: int,
    fractions: tuple[float, float, float],
    keep: list[str],
) -> pa.Table:
    y = label_values(batch.column(label_column), positive)
    codes = split_codes(batch, entity_keys, seed, fractions)
    out = batch.select(keep).append_column(LABEL_COL, pa.array(y, pa.float32()))
    out = out.append_column(SPLIT_COL, pa.array(codes, pa.int8()))
    return out.filter(pc.invert(pc.is_nan(out.column(LABEL_COL))))


def _only_split(batch: pa.Table, *, code: int) -> pa.Table:
    return batch.filter(pc.equal(batch.column(SPLIT_COL), code)).drop_columns([SPLIT_COL])


def _to_tensors(batch: pa.Table, *, preprocessor_json: str) -> dict[str, np.ndarray]:
    pre = _cached_preprocessor(preprocessor_json)
    return {
        "x": pre.transform(batch),
        "y": batch.column(LABEL_COL).to_numpy(zero_copy_only=False).astype(np.float32),
    }


_PRE_CACHE: dict[int, Preprocessor] = {}


def _cached_preprocessor(text: str) -> Preprocessor:
    # map_batches calls once per batch: parse the JSON once per worker process.
    key = hash(text)
    if key not in _PRE_CACHE:
        _PRE_CACHE.clear()
        _PRE_CACHE[key] = Preprocessor.from_json(text)
    return _PRE_CACHE[key]


@dataclass
class PreparedData:
    """The three splits, the fitted preprocessor and the tensors for training.

    ``raw[split]``: the input columns plus ``__label`` (float 0/1), materialized.
    ``tensors[split]``: ``{"x": float32[input_dim], "y": float32}`` rows, materialized.
    """

    raw: dict[str, Any]
    tensors: dict[str, Any]
    preprocessor: Preprocessor
    input_columns: list[str]
    rows: dict[str, int]
    positive_rate: dict[str, float]
    profile_sample: pa.Table
    dropped_unlabelled: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return self.preprocessor.output_dim


def _check_columns(ds: ray.data.Dataset, cfg: TrainDatasetConfig, inputs: Sequence[str]) -> None:
    names = set(ds.schema().names)
    wanted = {
        "dataset.entity_keys": list(cfg.entity_keys),
        "dataset.label_column": [cfg.label_column],
        "dataset.columns": list(inputs),
    }
    for fld, cols in wanted.items():
        missing = [c for c in cols if c not in names]
        if missing:
            raise SchemaError(
                f"column {missing[0]!r} ({fld}) is not in the training data (rule: columns "
                f"present: {', '.join(sorted(names))})",
                field=fld,
                column=missing[0],
                rule="column present",
            )


def prepare_data(
    ds: ray.data.Dataset,
    cfg: TrainDatasetConfig,
    pre_cfg: PreprocessingConfig,
    input_columns: Sequence[str],
    *,
    aliases: Mapping[str, str] | None = None,
    seed: int = 0,
) -> PreparedData:
    """Split ``ds`` by entity, fit the preprocessor on train, build the tensor datasets.

    ``ds`` holds the entity keys, the label and the ``input_columns`` (raw features).

    Raises:
        ValidationError: too few labelled rows (``field='dataset.entity_table'``), an empty split
            (``dataset.split``), or a single-class train split (``dataset.label_column``).
        SchemaError: a configured column is missing.
    """
    ds = ds.materialize()
    if ds.schema() is None or ds.count() == 0:
        raise ValidationError(
            f"the training dataset from {cfg.entity_table!r} is empty (rule: at least "
            f"{cfg.min_rows} labelled rows)",
            field="dataset.entity_table",
            value=cfg.entity_table,
            rule=f">= {cfg.min_rows} rows",
        )
    _check_columns(ds, cfg, input_columns)
    total = ds.count()
    fractions = (cfg.split.train, cfg.split.validation, cfg.split.test)
    keep = [*cfg.entity_keys, *input_columns]
    keep = list(dict.fromkeys(keep))
    labelled = ds.map_batches(
        _split_and_label,  # type: ignore[arg-type]  # Ray's stub knows no fn_kwargs-only fns
        batch_format="pyarrow",
        fn_kwargs={
            "entity_keys": list(cfg.entity_keys),
            "label_column": cfg.label_column,
            "positive": cfg.positive_label,
            "seed": cfg.split.seed,
            "fractions": fractions,
            "keep": keep,
        },
    ).materialize()
    n_labelled = labelled.count()
    if n_labelled < cfg.min_rows:
        raise ValidationError(
            f"the training dataset has {n_labelled} labelled rows (rule: at least "
            f"{cfg.min_rows}; {total - n_labelled} rows had no label)",
            field="dataset.entity_table",
            value=n_labelled,
            rule=f">= {cfg.min_rows} rows",
        )
    raw: dict[str, Any] = {}
    rows: dict[str, int] = {}
    for code, split in enumerate(SPLITS):
        raw[split] = labelled.map_batches(
            _only_split, batch_format="pyarrow", fn_kwargs={"code": code}
        ).materialize()
        rows[split] = raw[split].count()
        if rows[split] == 0:
            raise ValidationError(
                f"the {split} split is empty ({n_labelled} labelled rows, fractions "
                f"{fractions}) (rule: every split gets at least one entity)",
                field=f"dataset.split.{split}",
                value=getattr(cfg.split, split),
                rule="non-empty split",
            )

    fitter = PreprocessorFitter(
        list(input_columns),
        categorical=pre_cfg.categorical,
        numeric=pre_cfg.numeric,
        encoding=pre_cfg.categorical_encoding,
        max_categories=pre_cfg.max_categories,
        min_category_count=pre_cfg.min_category_count,
        aliases=aliases,
    )
    rng = np.random.default_rng(seed)
    frac = min(1.0, pre_cfg.profile_sample_rows / max(rows["train"], 1))
    sample_parts: list[pa.Table] = []
    positives = {s: 0.0 for s in SPLITS}
    for batch in raw["train"].iter_batches(batch_format="pyarrow", batch_size=8192):
        fitter.update(batch)
        positives["train"] += float(np.nansum(batch.column(LABEL_COL).to_numpy()))
        mask = rng.random(batch.num_rows) < frac if frac < 1.0 else None
        sample_parts.append(batch if mask is None else batch.filter(pa.array(mask)))
    if positives["train"] in (0.0, float(rows["train"])):
        raise ValidationError(
            f"the train split has only one class ({int(positives['train'])} positives of "
            f"{rows['train']} rows) (rule: both classes of {cfg.label_column!r} are present)",
            field="dataset.label_column",
            value=cfg.label_column,
            rule="two classes",
        )
    for split in ("validation", "test"):
        # Streaming sum: Dataset.sum() starts a hash-aggregate shuffle (seconds) for one number.
        positives[split] = sum(
            float(np.nansum(b[LABEL_COL]))
            for b in raw[split].iter_batches(batch_format="numpy", batch_size=65536)
        )
    pre = fitter.finish()
    pre_json = pre.to_json()
    tensors = {
        split: raw[split]
        .map_batches(_to_tensors, batch_format="pyarrow", fn_kwargs={"preprocessor_json": pre_json})
        .materialize()
        for split in ("train", "validation")
    }
    sample = pa.concat_tables(sample_parts).select(list(input_columns)) if sample_parts else None
    return PreparedData(
        raw=raw,
        tensors=tensors,
        preprocessor=pre,
        input_columns=list(input_columns),
        rows=rows,
        positive_rate={s: positives[s] / rows[s] for s in SPLITS},
        profile_sample=sample,
        dropped_unlabelled=total - n_labelled,
        info={"split_seed": cfg.split.seed, "fractions": list(fractions)},
    )
