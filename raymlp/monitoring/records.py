"""The prediction-log contract: what the gateway sends the monitor, validated and normalised.

A **prediction record** (one per answered or failed request; ``MonitorActor.log_predictions``)::

    {"request_id": "9f2c...",        # str, unique per request (feedback joins on it)
     "model": "customer-churn",      # registered model name
     "version": 3,                   # int, or None when nothing versioned answered (rule/default)
     "route": "primary",             # primary|canary|shadow|fallback|rule|default|cache
     "tenant": "default",
     "features": {"tenure_months": 3, "contract": "monthly"},   # the model's inputs
     "prediction": "high_risk",      # JSON scalar (class name, 0/1, number) or None on error
     "probability": 0.71,            # float in [0, 1] or None
     "latency_ms": 4.2,              # end-to-end at the gateway
     "status": "ok",                 # ok | error (default: error when error_code is set)
     "error_code": None,             # e.g. "schema_error", "timeout", "unavailable"
     "ts": 1718000000.123}           # epoch seconds (or ISO-8601 / datetime); default: now

A **feedback record** (``MonitorActor.log_feedback``; from ``POST /v1/feedback``)::

    {"request_id": "9f2c...", "label": 1, "ts": 1718003600.0}

Unknown keys are errors (the contract is strict so that a typo in the gateway shows in its own
tests, not as a silently empty dashboard). Both become rows of Delta tables under
``<root>/monitoring/`` (``prediction_log``, ``feedback``); :func:`predictions_to_table` and
:func:`table_to_predictions` convert::

    >>> rec = normalize_prediction({"request_id": "r1", "model": "churn", "version": 1,
    ...                             "features": {"x": 1.0}, "probability": 0.9, "ts": 10.0})
    >>> rec["route"], rec["status"]
    ('primary', 'ok')
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlp._private.values import category_key
from raymlp.errors import ValidationError

__all__ = [
    "ROUTES",
    "RESPONSE_ROUTES",
    "PREDICTION_SCHEMA",
    "FEEDBACK_SCHEMA",
    "normalize_prediction",
    "normalize_feedback",
    "normalize_predictions",
    "normalize_feedbacks",
    "predictions_to_table",
    "table_to_predictions",
    "feedback_to_table",
    "table_to_feedback",
    "category_key",
    "parse_ts",
]

#: Every route a record may carry (how the gateway answered).
ROUTES = ("primary", "canary", "shadow", "fallback", "rule", "default", "cache")
#: Routes that answered the caller (a shadow call duplicates a request and never answers).
RESPONSE_ROUTES = frozenset(r for r in ROUTES if r != "shadow")

_PRED_KEYS = frozenset(
    {
        "request_id",
        "model",
        "version",
        "route",
        "tenant",
        "features",
        "prediction",
        "probability",
        "latency_ms",
        "status",
        "error_code",
        "ts",
    }
)
_FEEDBACK_KEYS = frozenset({"request_id", "label", "ts", "model"})
_MAX_ID = 256

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("date", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=True),
        pa.field("route", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("features", pa.string(), nullable=False),  # JSON object
        pa.field("prediction", pa.string(), nullable=True),  # JSON value
        pa.field("probability", pa.float64(), nullable=True),
        pa.field("latency_ms", pa.float64(), nullable=True),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_code", pa.string(), nullable=True),
        pa.field("source", pa.string(), nullable=False),
    ]
)

FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("date", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),  # JSON value
        pa.field("model", pa.string(), nullable=True),
    ]
)


def _bad(where: str, field: str, value: Any, rule: str) -> ValidationError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValidationError(
        f"{where}.{field} = {shown} is invalid (rule: {rule})",
        field=f"{where}.{field}",
        value=shown,
        rule=rule,
    )


def parse_ts(value: Any, where: str = "record", now: float | None = None) -> float:
    """Epoch seconds from a number, an ISO-8601 string or a datetime (None: now)."""
    if value is None:
        return time.time() if now is None else now
    if isinstance(value, bool):
        raise _bad(where, "ts", value, "epoch seconds, ISO-8601 or datetime")
    if isinstance(value, int | float | np.integer | np.floating):
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise _bad(where, "ts", value, "finite epoch seconds >= 0")
        return v
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return dt.timestamp()
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _bad(where, "ts", value, "epoch seconds, ISO-8601 or datetime") from None
        return parse_ts(dt, where)
    raise _bad(where, "ts", value, "epoch seconds, ISO-8601 or datetime")


def _name(rec: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    v = rec.get(key, default)
    if not isinstance(v, str) or not v or len(v) > _MAX_ID:
        raise _bad(where, key, v, f"a non-empty string of at most {_MAX_ID} chars")
    return v


def normalize_prediction(rec: Any, where: str = "record", now: float | None = None) -> dict:
    """Validate one prediction record; returns it with every field present and typed.

    Raises ValidationError naming ``<where>.<field>`` and the rule.
    """
    if not isinstance(rec, Mapping):
        raise ValidationError(
            f"{where} is a {type(rec).__name__} (rule: a dict)", field=where, rule="dict"
        )
    extra = set(rec) - _PRED_KEYS
    if extra:
        key = sorted(map(str, extra))[0]
        raise _bad(where, key, rec[key], f"unknown field; allowed: {', '.join(sorted(_PRED_KEYS))}")
    version = rec.get("version")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int | np.integer) or version < 0:
            raise _bad(where, "version", version, "an integer >= 0 or None")
        version = int(version)
    route = rec.get("route", "primary")
    if route not in ROUTES:
        raise _bad(where, "route", route, "one of " + "|".join(ROUTES))
    features = rec.get("features") or {}
    if not isinstance(features, Mapping) or not all(isinstance(k, str) for k in features):
        raise _bad(where, "features", features, "a dict of feature name -> value")
    prob = rec.get("probability")
    if prob is not None:
        if isinstance(prob, bool) or not isinstance(prob, int | float | np.integer | np.floating):
            raise _bad(where, "probability", prob, "a number in [0, 1] or None")
        prob = float(prob)
        if math.isnan(prob):
            prob = None
        elif not 0.0 <= prob <= 1.0:
            raise _bad(where, "probability", prob, "a number in [0, 1] or None")
    latency = rec.get("latency_ms")
    if latency is not None:
        if isinstance(latency, bool) or not isinstance(
            latency, int | float | np.integer | np.floating
        ):
            raise _bad(where, "latency_ms", latency, "a number >= 0 or None")
        latency = float(latency)
        if not math.isfinite(latency) or latency < 0:
            raise _bad(where, "latency_ms", latency, "a number >= 0 or None")
    code = rec.get("error_code")
    if code is not None and (not isinstance(code, str) or not code or len(code) > 64):
        raise _bad(where, "error_code", code, "a non-empty string of at most 64 chars or None")
    status = rec.get("status", "error" if code else "ok")
    if status not in ("ok", "error"):
        raise _bad(where, "status", status, "ok|error")
    prediction = rec.get("prediction")
    if isinstance(prediction, np.generic):
        prediction = prediction.item()
    return {
        "request_id": _name(rec, "request_id", where),
        "ts": parse_ts(rec.get("ts"), where, now),
        "model": _name(rec, "model", where),
        "version": version,
        "route": route,
        "tenant": _name(rec, "tenant", where, "default"),
        "features": dict(features),
        "prediction": prediction,
        "probability": prob,
        "latency_ms": latency,
        "status": status,
        "error_code": code,
    }


def normalize_feedback(rec: Any, where: str = "feedback", now: float | None = None) -> dict:
    """Validate one feedback record (``request_id``, ``label``, optional ``ts`` and ``model``)."""
    if not isinstance(rec, Mapping):
        raise ValidationError(
            f"{where} is a {type(rec).__name__} (rule: a dict)", field=where, rule="dict"
        )
    extra = set(rec) - _FEEDBACK_KEYS
    if extra:
        key = sorted(map(str, extra))[0]
        raise _bad(
            where, key, rec[key], f"unknown field; allowed: {', '.join(sorted(_FEEDBACK_KEYS))}"
        )
    label = rec.get("label")
    if isinstance(label, np.generic):
        label = label.item()
    if (
        label is None
        or not isinstance(label, str | int | float | bool)
        or (isinstance(label, float) and not math.isfinite(label))
    ):
        raise _bad(where, "label", label, "a string, number or bool")
    model = rec.get("model")
    return {
        "request_id": _name(rec, "request_id", where),
        "label": label,
        "ts": parse_ts(rec.get("ts"), where, now),
        "model": _name(rec, "model", where) if model is not None else None,
    }


def normalize_predictions(records: Any, now: float | None = None) -> list[dict]:
    """Validate a batch (all or nothing: the first bad record raises, naming its index)."""
    if not isinstance(records, list | tuple):
        raise ValidationError(
            f"records is a {type(records).__name__} (rule: a list of dicts)",
            field="records",
            rule="list",
        )
    now = time.time() if now is None else now
    return [normalize_prediction(r, f"records[{i}]", now) for i, r in enumerate(records)]


def normalize_feedbacks(records: Any, now: float | None = None) -> list[dict]:
    """Validate a batch of feedback records (all or nothing)."""
    if not isinstance(records, list | tuple):
        raise ValidationError(
            f"records is a {type(records).__name__} (rule: a list of dicts)",
            field="records",
            rule="list",
        )
    now = time.time() if now is None else now
    return [normalize_feedback(r, f"records[{i}]", now) for i, r in enumerate(records)]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, allow_nan=True)


def _ts_column(ts: Iterable[float]) -> tuple[pa.Array, list[str]]:
    micros = [round(t * 1_000_000) for t in ts]
    arr = pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    dates = [datetime.fromtimestamp(m / 1e6, UTC).strftime("%Y-%m-%d") for m in micros]
    return arr, dates


def predictions_to_table(records: list[dict], source: str = "sdk") -> pa.Table:
    """Normalised prediction records → a ``prediction_log`` table."""
    ts, dates = _ts_column(r["ts"] for r in records)
    return pa.table(
        {
            "request_id": [r["request_id"] for r in records],
            "ts": ts,
            "date": dates,
            "model": [r["model"] for r in records],
            "version": pa.array([r["version"] for r in records], pa.int64()),
            "route": [r["route"] for r in records],
            "tenant": [r["tenant"] for r in records],
            "features": [_dumps(r["features"]) for r in records],
            "prediction": pa.array(
                [None if r["prediction"] is None else _dumps(r["prediction"]) for r in records],
                pa.string(),
            ),
            "probability": pa.array([r["probability"] for r in records], pa.float64()),
            "latency_ms": pa.array([r["latency_ms"] for r in records], pa.float64()),
            "status": [r["status"] for r in records],
            "error_code": pa.array([r["error_code"] for r in records], pa.string()),
            "source": [source] * len(records),
        },
        schema=PREDICTION_SCHEMA,
    )


def _epoch(col: pa.ChunkedArray) -> list[float]:
    return pc.divide(col.cast(pa.int64()).cast(pa.float64()), 1_000_000.0).to_pylist()


def table_to_predictions(table: pa.Table) -> list[dict]:
    """``prediction_log`` rows → normalised prediction records (in table order)."""
    if table.num_rows == 0:
        return []
    cols = {
        n: table[n].to_pylist()
        for n in PREDICTION_SCHEMA.names
        if n not in ("ts", "date", "source") and n in table.column_names
    }
    ts = _epoch(table["ts"])
    out = []
    for i in range(table.num_rows):
        pred = cols["prediction"][i]
        out.append(
            {
                "request_id": cols["request_id"][i],
                "ts": ts[i],
                "model": cols["model"][i],
                "version": cols["version"][i],
                "route": cols["route"][i],
                "tenant": cols["tenant"][i],
                "features": json.loads(cols["features"][i]),
                "prediction": None if pred is None else json.loads(pred),
                "probability": cols["probability"][i],
                "latency_ms": cols["latency_ms"][i],
                "status": cols["status"][i],
                "error_code": cols["error_code"][i],
            }
        )
    return out


def feedback_to_table(records: list[dict]) -> pa.Table:
    """Normalised feedback records → a ``feedback`` table."""
    ts, dates = _ts_column(r["ts"] for r in records)
    return pa.table(
        {
            "request_id": [r["request_id"] for r in records],
            "ts": ts,
            "date": dates,
            "label": [_dumps(r["label"]) for r in records],
            "model": pa.array([r.get("model") for r in records], pa.string()),
        },
        schema=FEEDBACK_SCHEMA,
    )


def table_to_feedback(table: pa.Table) -> list[dict]:
    """``feedback`` rows → normalised feedback records."""
    if table.num_rows == 0:
        return []
    ids = table["request_id"].to_pylist()
    labels = table["label"].to_pylist()
    models = table["model"].to_pylist()
    ts = _epoch(table["ts"])
    return [
        {"request_id": ids[i], "label": json.loads(labels[i]), "ts": ts[i], "model": models[i]}
        for i in range(table.num_rows)
    ]
