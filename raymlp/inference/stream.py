"""Streaming inference: tail an events source, push fresh features, score each event, commit the
results and the source offset together — exactly one output row per event across restarts.

One micro-batch (:meth:`StreamProcessor.step`):

1. ``source.poll(offset)`` → the events after the last committed offset;
2. push them to the ``push_views`` (``p.features.push``: offline append + online upsert), so
   the online store holds the features the events carry before anyone scores;
3. score every event — through the Serve application's Gateway handle (``p.serve.handle``:
   the same routing, canary, fallback chain and prediction log as HTTP), or with a local
   predictor reading the online store (:class:`LocalScorer`);
4. append the results to ``<root>/predictions/<output>`` in **one Delta commit that also records
   the batch number and the new source offset** (custom commit metadata + a Delta app
   transaction ``raymlp-stream:<name>``).

On start the processor reads the last committed batch and offset back from the table, so a crash
before the commit reprocesses the batch (nothing of it was written) and a crash after it does
not (the offset moved with the rows). A second instance of the same stream cannot commit the
same batch: the commit is fenced on the batch number (ConflictError). Pushes to the feature
store and the Serve prediction log are at-least-once: a reprocessed batch pushes its rows again,
which reads the same (the newest row per entity wins).

Example::

    proc = StreamProcessor(p, cfg)            # restores the committed offset
    proc.run(until_idle=True)                 # or max_batches=N; run() alone runs until stopped
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from raymlp.config import StreamPredictJobConfig
from raymlp.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from raymlp.features.dtypes import TS_TYPE
from raymlp.inference import predictions_table as ptable
from raymlp.inference.model import (
    input_refs,
    labels_for,
    resolve_model,
    with_model_inputs,
)
from raymlp.inference.sources import EVENT_ID, EventSource, load_source

__all__ = [
    "Scores",
    "Scorer",
    "LocalScorer",
    "ServeScorer",
    "make_scorer",
    "StreamProcessor",
    "StreamSummary",
    "app_id_for",
    "run_stream",
]

log = logging.getLogger(__name__)

#: Errors that retrying cannot fix: the job stops at once.
_FATAL = (
    ConfigError,
    ValidationError,
    NotFoundError,
    PermissionDeniedError,
    AuthenticationError,
    ConflictError,
)


def app_id_for(stream: str) -> str:
    """The Delta app transaction id of a stream (its offsets' identity in the output table)."""
    return f"raymlp-stream:{stream}"


@dataclass
class Scores:
    """One value per event: ``probability``/``prediction``/``model_version`` (None on error),
    ``route`` (``primary``, ``canary``, ``fallback``, ... or ``local``), ``error``."""

    probability: list[float | None]
    prediction: list[str | None]
    model_version: list[int | None]
    route: list[str | None]
    error: list[str | None]

    @classmethod
    def failed(cls, n: int, message: str) -> Scores:
        return cls([None] * n, [None] * n, [None] * n, [None] * n, [message] * n)


class Scorer(ABC):
    """Scores a micro-batch of events (one :class:`Scores` entry per row, in order)."""

    kind = "scorer"

    @abstractmethod
    def score(self, events: pa.Table) -> Scores:
        """Score ``events``. Per-event problems go into ``Scores.error``; raising fails the
        batch (it is retried, then the job stops — nothing of it is committed)."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


def _py(value: Any) -> Any:
    """A JSON-friendly Python value (timestamps as ISO strings)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


class LocalScorer(Scorer):
    """A predictor in this process. ``request: entity`` reads the model's features from the
    online store for each event's keys (after the push); ``features`` uses the event's columns.
    The alias is re-resolved every batch: a promotion switches versions without a restart."""

    kind = "local"

    def __init__(self, platform: Any, cfg: StreamPredictJobConfig, device: str = "cpu") -> None:
        self._p, self._cfg, self._device = platform, cfg, device
        self._version: int | None = None
        self._predictor: Any = None
        self._refs: dict[str, str] = {}

    def _current(self) -> tuple[Any, int]:
        from raymlp.predictor.artifact import load_predictor

        mv = resolve_model(self._p, self._cfg.model)
        if mv.version != self._version:
            self._predictor = load_predictor(
                mv.artifact_uri,
                variant=self._cfg.model.variant,
                device=self._device,
                digests=mv.digests,
                factory_modules=self._p.config.registry.model_factory_modules,
            )
            self._refs = input_refs(
                self._predictor.spec, self._cfg.features, self._predictor.input_names
            )
            self._version = mv.version
            log.info("stream %s: scoring with %s v%s", self._cfg.name, mv.name, mv.version)
        return self._predictor, int(mv.version)

    def score(self, events: pa.Table) -> Scores:
        n = events.num_rows
        predictor, version = self._current()
        try:
            if self._cfg.scoring.request == "entity" and self._refs:
                keys = {k: events.column(k).to_pylist() for k in self._cfg.entity_keys}
                reply = self._p.features.get_online_features(
                    keys, sorted(set(self._refs.values())), format="columns"
                )
                data: Any = {**reply["columns"]}
                for c in events.column_names:  # request-time inputs the event carries
                    data.setdefault(c, events.column(c))
            else:
                data = events
            proba = predictor.predict_proba(with_model_inputs(data, self._refs))
        except ValidationError as e:  # this batch can never score: say so in every row
            return Scores.failed(n, f"{e.code}: {e.message}")
        labels = labels_for(proba, predictor.class_names, predictor.threshold).to_pylist()
        return Scores([float(p) for p in proba], labels, [version] * n, ["local"] * n, [None] * n)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_version": self._version}


class ServeScorer(Scorer):
    """Scores through the Serve application's Gateway handle, ``max_inflight`` requests at a
    time: routing (canary, shadow), cache, fallback chain and prediction log apply."""

    kind = "serve"

    def __init__(
        self,
        platform: Any,
        cfg: StreamPredictJobConfig,
        app: str | None,
        say: Callable[[str], None] = print,
    ) -> None:
        self._cfg = cfg
        app_cfg = platform.serve.config(app)  # NotFoundError: no app deployed with raymlp
        self.app = app_cfg.name
        self._handle = platform.serve.handle(self.app)
        cache = app_cfg.cache
        if cfg.scoring.request == "entity" and cache.enabled and cache.entity_requests:
            # Entity answers are cached by entity: right after a push, the gateway may still
            # hold the answer computed from the features before it.
            say(
                f"warning: serve app {self.app!r} caches entity answers for "
                f"{cache.ttl.total_seconds():g}s, so an event may get an answer computed before "
                "its push; set cache.entity_requests: false in the serve config for streams"
            )
        self._inputs: list[str] | None = None
        if cfg.scoring.request == "features":
            sig = resolve_model(platform, cfg.model).signature or {}
            self._inputs = [i["name"] for i in sig.get("inputs") or []] or None

    def _bodies(self, events: pa.Table) -> list[dict[str, Any]]:
        cfg, rows = self._cfg, events.to_pylist()
        bodies = []
        for row in rows:
            body: dict[str, Any] = {"model_id": cfg.model.name}
            keys = {k: _py(row[k]) for k in cfg.entity_keys}
            if cfg.scoring.request == "entity":
                body["entity"] = keys
            else:
                names = self._inputs or [c for c in row if c != EVENT_ID]
                feats = {c: _py(row.get(c)) for c in names}
                body["features"] = {**keys, **feats}  # keys: sticky canary routing
            if cfg.model.version is not None:
                body["version"] = cfg.model.version
            bodies.append(body)
        return bodies

    def score(self, events: pa.Table) -> Scores:
        bodies = self._bodies(events)
        window = self._cfg.scoring.max_inflight
        deadline = time.monotonic() + self._cfg.scoring.timeout_s
        answers: list[dict[str, Any]] = []
        for i in range(0, len(bodies), window):
            pending = [self._handle.infer.remote(b) for b in bodies[i : i + window]]
            for resp in pending:
                left = max(0.1, deadline - time.monotonic())
                answers.append(resp.result(timeout_s=left))
        out = Scores([], [], [], [], [])
        for a in answers:
            err = a.get("error") if isinstance(a, dict) else None
            if err:
                out.probability.append(None)
                out.prediction.append(None)
                out.model_version.append(None)
                out.route.append(None)
                out.error.append(f"{err.get('code')}: {err.get('message')}")
                continue
            prob = a.get("probability")
            out.probability.append(float(prob) if prob is not None else None)
            out.prediction.append(None if a.get("prediction") is None else str(a["prediction"]))
            mv = a.get("model_version")
            out.model_version.append(int(mv) if mv is not None else None)
            out.route.append(a.get("route"))
            out.error.append(None)
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "app": self.app}


def _serve_ready(platform: Any, cfg: StreamPredictJobConfig) -> bool:
    """Whether a raymlp Serve app serving the model is deployed and running."""
    try:
        app_cfg = platform.serve.config(cfg.scoring.app)
        if app_cfg.model(cfg.model.name) is None:
            return False
        from ray import serve

        st = serve.status().applications.get(app_cfg.name)
        status = str(getattr(st.status, "value", st.status)) if st is not None else ""
        return status == "RUNNING"
    except Exception:  # noqa: BLE001 - Serve not started, nothing deployed: score locally
        return False


def make_scorer(
    platform: Any, cfg: StreamPredictJobConfig, say: Callable[[str], None] = print
) -> Scorer:
    """The scorer ``cfg.scoring.mode`` asks for (``auto``: Serve when the app is running)."""
    mode = cfg.scoring.mode
    if mode == "auto":
        mode = "serve" if _serve_ready(platform, cfg) else "local"
    if mode == "serve":
        return ServeScorer(platform, cfg, cfg.scoring.app, say)
    return LocalScorer(platform, cfg)


@dataclass
class StreamSummary:
    """What :meth:`StreamProcessor.run` did."""

    stream: str
    batches: int = 0
    events: int = 0
    last_batch: int = 0
    offset: Any = None
    idle_polls: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StreamProcessor:
    """The streaming job's loop (see the module docstring).

    Args:
        platform: a connected :class:`~raymlp.client.Platform`.
        cfg: the job config.
        source / scorer: override the ones ``cfg`` describes (tests, custom buses).
        say: progress printer.
    """

    def __init__(
        self,
        platform: Any,
        cfg: StreamPredictJobConfig,
        *,
        source: EventSource | None = None,
        scorer: Scorer | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self._p, self.cfg, self._say = platform, cfg, say
        self.app_id = app_id_for(cfg.name)
        self.output = cfg.output_table
        self.source = source or load_source(cfg.source, platform.storage.delta_storage_options())
        self.scorer = scorer or make_scorer(platform, cfg, say)
        self.batch, self.offset = self.restore()

    def restore(self) -> tuple[int, Any]:
        """``(last committed batch number, its offset)`` from the output table (``(0, None)``
        for a new stream)."""
        batch, meta = ptable.app_version(self._p.storage, self.output, self.app_id)
        if batch is None:
            return 0, None
        return batch, json.loads(meta.get("raymlp.offset", "null"))

    # -- one micro-batch ---------------------------------------------------------------------

    def _event_ids(self, events: pa.Table) -> pa.Array:
        col = self.cfg.event_id_column or EVENT_ID
        if col not in events.column_names:
            raise ValidationError(
                f"events have no {col!r} column (rule: set event_id_column, or use a source "
                "that assigns ids)",
                field="event_id_column",
                value=col,
                rule="event id column",
            )
        ids = events.column(col)
        return ids if ids.type == pa.string() else ids.cast(pa.string())

    def _output(self, events: pa.Table, scores: Scores, batch: int) -> pa.Table:
        n = events.num_rows
        cols: dict[str, Any] = {"event_id": self._event_ids(events)}
        keep = list(self.cfg.entity_keys)
        ts = self.cfg.timestamp_column
        if ts and ts in events.column_names and ts not in keep:
            keep.append(ts)
        keep += [c for c in self.cfg.passthrough_columns if c not in keep]
        for c in keep:
            if c not in events.column_names:
                raise ValidationError(
                    f"events have no column {c!r} (rule: entity_keys and passthrough_columns "
                    f"name event columns; got {sorted(events.column_names)})",
                    field="passthrough_columns"
                    if c in self.cfg.passthrough_columns
                    else "entity_keys",
                    value=c,
                    rule="existing column",
                )
            col = events.column(c)
            cols[c] = col.cast(pa.string()) if pa.types.is_null(col.type) else col
        now_us = int(time.time() * 1_000_000)
        cols.update(
            {
                "probability": pa.array(scores.probability, pa.float64()),
                "prediction": pa.array(scores.prediction, pa.string()),
                "model_name": pa.array([self.cfg.model.name] * n, pa.string()),
                "model_version": pa.array(scores.model_version, pa.int64()),
                "route": pa.array(scores.route, pa.string()),
                "error": pa.array(scores.error, pa.string()),
                "batch_id": pa.array(np.full(n, batch, np.int64)),
                "scored_at": pa.array(np.full(n, now_us, np.int64)).cast(TS_TYPE),
            }
        )
        return pa.table(cols)

    def process(self, events: pa.Table, next_offset: Any) -> int:
        """Push, score and commit one micro-batch (with ``next_offset``); returns its rows."""
        n = events.num_rows
        pushed = {view: self._p.features.push(view, events) for view in self.cfg.push_views}
        scores = self.scorer.score(events)
        if len(scores.probability) != n:
            raise ValidationError(
                f"the scorer returned {len(scores.probability)} scores for {n} events",
                field="scores",
                rule="one score per event",
            )
        batch = self.batch + 1
        out = self._output(events, scores, batch)
        lineage = {
            "stream": self.cfg.name,
            "batch": batch,
            "source": self.source.describe(),
            "offset": next_offset,
            "scorer": self.scorer.describe(),
            "model": {
                "name": self.cfg.model.name,
                "alias": self.cfg.model.alias,
                "version": self.cfg.model.version,
            },
            "model_versions": sorted({v for v in scores.model_version if v is not None}),
            "pushed": pushed,
            "rows": n,
        }
        self._commit(out, batch, next_offset, lineage)
        self.batch, self.offset = batch, next_offset
        return n

    def _commit(self, out: pa.Table, batch: int, offset: Any, lineage: dict[str, Any]) -> int:
        return ptable.append(
            self._p.storage,
            self.output,
            out,
            app_id=self.app_id,
            batch=batch,
            metadata={
                "raymlp.op": "stream_predict",
                "raymlp.offset": json.dumps(offset),
                "raymlp.rows": str(out.num_rows),
                ptable.LINEAGE_KEY: json.dumps(lineage, default=str),
            },
        )

    def step(self) -> int:
        """Poll once and process what came; returns the events written (0: nothing new)."""
        events, next_offset = self.source.poll(self.offset)
        if events is None or events.num_rows == 0:
            # Nothing to write: the offset moves in memory only (replaying empty commits after
            # a restart is harmless).
            self.offset = next_offset
            return 0
        return self.process(events, next_offset)

    # -- the loop ----------------------------------------------------------------------------

    def _step_with_retries(self) -> int:
        attempt = 0
        while True:
            try:
                return self.step()
            except _FATAL:
                raise
            except Exception as e:
                if attempt >= self.cfg.max_retries:
                    raise
                attempt += 1
                delay = min(30.0, 0.5 * 2 ** (attempt - 1))
                self._say(
                    f"stream {self.cfg.name}: batch {self.batch + 1} failed ({e!r}); "
                    f"retry {attempt}/{self.cfg.max_retries} in {delay:.1f}s"
                )
                time.sleep(delay)  # back-off before retrying an external failure
                self.batch, self.offset = self.restore()

    def run(
        self,
        *,
        max_batches: int | None = None,
        until_idle: bool = False,
        stop: threading.Event | None = None,
    ) -> StreamSummary:
        """Process micro-batches until ``stop`` is set, ``max_batches`` were written, or (with
        ``until_idle``) a poll finds nothing new. Idle polls wait ``poll_interval``."""
        summary = StreamSummary(self.cfg.name, last_batch=self.batch, offset=self.offset)
        stop = stop or threading.Event()
        wait = self.cfg.poll_interval.total_seconds()
        while not stop.is_set():
            if max_batches is not None and summary.batches >= max_batches:
                break
            n = self._step_with_retries()
            summary.offset, summary.last_batch = self.offset, self.batch
            if n == 0:
                summary.idle_polls += 1
                if until_idle:
                    break
                stop.wait(wait)
                continue
            summary.batches += 1
            summary.events += n
            self._say(
                f"stream {self.cfg.name}: batch {self.batch}: {n} events scored "
                f"({self.scorer.kind}), offset {json.dumps(self.offset)}"
            )
        self.source.close()
        return summary


def run_stream(
    platform: Any,
    cfg: StreamPredictJobConfig,
    *,
    max_batches: int | None = None,
    until_idle: bool = False,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = print,
) -> StreamSummary:
    """Build a :class:`StreamProcessor` for ``cfg`` and run it (see :meth:`StreamProcessor.run`)."""
    proc = StreamProcessor(platform, cfg, say=say)
    say(
        f"stream {cfg.name}: scoring with {proc.scorer.kind}, output "
        f"{ptable.table_uri(platform.storage, proc.output)}, resuming after batch {proc.batch} "
        f"(offset {json.dumps(proc.offset)})"
    )
    return proc.run(max_batches=max_batches, until_idle=until_idle, stop=stop)
