"""The ``ModelServer`` deployment: many model versions per replica, batched inference.

- **Multiplexed by version id**: a request carries ``multiplexed_model_id="name:version"``;
  ``get_model`` (``@serve.multiplexed``, an LRU bounded by ``max_models_per_replica``) loads the
  version's artifact from the registry on first use with the training package's loader, so the
  saved preprocessing runs exactly as in training. Serve routes a model id to the replicas that
  already hold it. A promotion therefore needs no redeploy: the gateway asks for another id.
- **Batched**: concurrent requests are grouped by a :class:`~raymlp.serving.batcher.MicroBatcher`
  per version (size and wait from the serve config, changeable live through ``user_config``),
  which forms a batch only when the previous one is done (``@serve.batch`` forms the next one
  while the current runs, so under load its batches hold what arrived in a few ms), and scored in one vectorised forward pass on
  the version's own worker thread, so the event loop keeps accepting requests while a batch runs.
  Each version has its own batch queue and thread: a slow version (a shadow, a sick canary)
  never delays another. A lone request of a version runs at once (``bypass_when_idle``) instead
  of waiting for company.
- **Online features**: the entity requests of a batch are looked up in the online store in one
  call, then validated against the version's signature (errors name the field, per request).

Answers are plain dicts — ``{"prediction", "probability"}`` or ``{"error": {...}}`` for a
request-level error — so one bad request never fails its batch-mates: a failed online lookup
of a batch is retried request by request, and a failed forward pass row by row, so only the
request at fault gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ray import serve

from raymlp._private.model_version import ModelVersion
from raymlp.config import ServeAppConfig, ServeBatching
from raymlp.errors import (
    ArtifactIntegrityError,
    ModelError,
    NotFoundError,
    OverloadedError,
    RayMLPError,
    StorageError,
    UnavailableError,
    ValidationError,
    unwrap_ray_error,
)
from raymlp.registry.signature import Signature, parse_signature, validate_request
from raymlp.serving.batcher import MicroBatcher

if TYPE_CHECKING:
    from raymlp.serving._platform import ReplicaServices

__all__ = ["ModelServer", "ServedModel", "parse_model_id"]

logger = logging.getLogger(__name__)

#: A version refused for a bad artifact is checked again after this long (an operator may have
#: restored its files); until then it is refused at once.
_REVERIFY_AFTER_S = 30.0


def parse_model_id(model_id: str) -> tuple[str, int]:
    """``"customer-churn:3"`` → ``("customer-churn", 3)``."""
    name, sep, version = model_id.rpartition(":")
    if not sep or not name or not version.isdigit():
        raise ValidationError(
            f"model id {model_id!r} is not 'name:version'",
            field="model_id",
            value=model_id,
            rule="name:version",
        )
    return name, int(version)


def _error_dict(exc: BaseException, model_id: str) -> dict[str, Any]:
    """The ``{"error": ...}`` answer of one request that raised ``exc``."""
    err = unwrap_ray_error(exc)
    if isinstance(err, RayMLPError):
        return err.to_dict()
    logger.warning("%s: a request failed: %s: %s", model_id, type(exc).__name__, exc)
    return UnavailableError(
        f"model {model_id!r} could not answer this request", reason=type(exc).__name__
    ).to_dict()


def _model_error_dict(exc: BaseException, model_id: str) -> dict[str, Any]:
    """The answer of a request whose forward pass raised: the model's own failure
    (``model_error``, attributed to this version), unless it is already a raymlp error."""
    if isinstance(unwrap_ray_error(exc), RayMLPError):
        return _error_dict(exc, model_id)
    logger.warning("%s: the model raised: %s: %s", model_id, type(exc).__name__, exc)
    return ModelError(
        f"model {model_id!r} failed on this request", model=model_id, reason=type(exc).__name__
    ).to_dict()


def _feature_column(ref: str) -> str:
    view, _, feature = ref.partition(":")
    return f"{view}__{feature}"


class ServedModel:
    """One loaded version: the predictor and what answering with it needs."""

    def __init__(
        self,
        model_id: str,
        predictor: Any,
        signature: Signature | None,
        feature_refs: dict[str, str] | None = None,
    ) -> None:
        self.model_id = model_id
        self.name, self.version = parse_model_id(model_id)
        self.predictor = predictor
        self.signature = signature
        inputs = set(predictor.input_names)
        #: {input name: "view:feature"} looked up for entity requests
        self.refs = {name: ref for name, ref in (feature_refs or {}).items() if name in inputs}
        self.lookup = sorted(set(self.refs.values()))
        self.column_to_input = {_feature_column(ref): name for name, ref in self.refs.items()}
        neg, pos = list(predictor.class_names)[:2]
        self._labels = (neg, pos)
        self._threshold = float(predictor.threshold)
        self.loaded_at = time.time()
        #: One inference thread per version: a slow version (a shadow, a sick canary) never
        #: queues another version's batches behind its own.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{model_id}")
        #: its batch queue (:class:`~raymlp.serving.batcher.MicroBatcher`, set once loaded)
        self.batched: Any = None
        #: requests of this version in the replica right now (the idle-bypass test)
        self.inflight = 0

    def __del__(self) -> None:
        # Called by the multiplexer when the LRU unloads this version (and by the GC): stop
        # its inference thread and its batch queue's task (best effort; Serve has no API).
        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.shutdown(wait=False)
        batched, self.batched = getattr(self, "batched", None), None
        try:
            if batched is not None:
                batched.close()
        except Exception:  # noqa: BLE001 - cleanup must never raise
            pass

    @classmethod
    def with_refs(
        cls, model_id: str, predictor: Any, signature: Signature | None, refs: list[str] | None
    ) -> ServedModel:
        """Use the serve config's ``features`` (``view:feature``) instead of the artifact's."""
        recorded = dict(predictor.spec.get("feature_refs") or {})
        if refs:
            inputs = set(predictor.input_names)
            recorded = {}
            for ref in refs:
                short = ref.partition(":")[2]
                recorded[short if short in inputs else _feature_column(ref)] = ref
        return cls(model_id, predictor, signature, recorded)

    def label(self, probability: float) -> str:
        return self._labels[1] if probability >= self._threshold else self._labels[0]

    def probe_row(self) -> dict[str, Any]:
        """A representative input (train means, most frequent categories) for warm-up."""
        row: dict[str, Any] = {}
        for spec in self.predictor.preprocessor.columns:
            if spec.kind == "numeric":
                row[spec.name] = float(spec.mean)
            else:
                row[spec.name] = spec.categories[0] if spec.categories else None
        return row


class ModelServer:
    """Serves versions by id (``name:version``) with batching; see the module docstring.

    Deployed by :func:`raymlp.serving.app.build_app` twice: the primary pool and, on replicas of
    its own, the fallback pool (``pool="fallback"``).
    """

    def __init__(
        self,
        app_config: dict[str, Any],
        pool: str = "primary",
        platform_config: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = ServeAppConfig.model_validate(app_config)
        self._platform_config = platform_config
        self.pool = pool
        self.settings = self.cfg.fallback_server if pool == "fallback" else self.cfg.model_server
        try:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        except Exception:  # noqa: BLE001 - a thread setting is an optimisation
            logger.warning("could not set torch threads", exc_info=True)
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="raymlp-io")
        self._platform: ReplicaServices | None = None
        self._loaded: weakref.WeakValueDictionary[str, ServedModel] = weakref.WeakValueDictionary()
        self._loading: dict[str, asyncio.Future] = {}
        self._batching = self.settings.batching
        self._inflight = 0
        self.max_inflight_seen = 0
        self.batch_sizes: Counter[int] = Counter()
        self.requests = 0
        self.errors = 0
        self.feature_calls = 0
        self.loads = 0
        #: versions refused for a bad artifact: model id -> (when, the error)
        self._refused: dict[str, tuple[float, ArtifactIntegrityError]] = {}
        self.refused_loads = 0

        async def _load(model_id: str) -> ServedModel:
            return await self._load_model(model_id)

        self._load_fn = _load

        # Wired at init so the LRU bound comes from the config (Serve supports this form).
        self.get_model = serve.multiplexed(
            max_num_models_per_replica=self.settings.max_models_per_replica
        )(_load)
        self._apply_batching(self._batching)

    # -- configuration -----------------------------------------------------------------------

    def _apply_batching(self, b: ServeBatching) -> None:
        self._batching = b
        for model in list(self._loaded.values()):
            if model.batched is not None:
                model.batched.set_max_batch_size(b.max_batch_size)
                model.batched.set_batch_wait_timeout_s(b.batch_wait_timeout_s)

    def _make_batched(self, model_id: str) -> MicroBatcher:
        """The batch queue of one version: versions never wait behind each other's batches.
        A :class:`~raymlp.serving.batcher.MicroBatcher`, not ``@serve.batch``: it forms a
        batch only when the previous one is done, so batches fill under load."""

        async def predict_batch(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return await self._run(model_id, items)

        b = self._batching
        return MicroBatcher(
            predict_batch,
            max_batch_size=b.max_batch_size,
            batch_wait_timeout_s=b.batch_wait_timeout_s,
        )

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Serve's live update: ``user_config`` holds the ``batching`` settings."""
        if user_config:
            self._apply_batching(ServeBatching.model_validate(user_config))

    # -- loading -----------------------------------------------------------------------------

    def _platform_client(self) -> ReplicaServices:
        """The registry and online features, as the app's service principal."""
        if self._platform is None:
            from raymlp.serving._platform import service_platform

            self._platform = service_platform(self.cfg.principal, self._platform_config)
        return self._platform

    def _load_sync(self, model_id: str) -> ServedModel:
        from raymlp.predictor.artifact import load_predictor

        name, version = parse_model_id(model_id)
        refused = self._refused.get(model_id)
        if refused is not None and time.monotonic() - refused[0] < _REVERIFY_AFTER_S:
            # Refused moments ago: answer at once (the chain falls back) instead of hashing
            # the files again on every request.
            raise refused[1]
        services = self._platform_client()
        # The raw record: ModelVersion does not carry the registered digests.
        record = services.registry._rpc.query("get_version", name=name, version=version)
        mv = ModelVersion.from_dict(record)
        digests = record.get("digests")
        if digests is None:
            logger.warning(
                "%s was registered without artifact digests (before they were recorded): "
                "loading it unverified; re-register it to have it verified",
                model_id,
            )
        checks = {
            "digests": digests,
            "factory_modules": services.config.registry.model_factory_modules,
        }
        variant = self.settings.variant
        try:
            try:
                predictor = load_predictor(mv.artifact_uri, variant=variant, **checks)
            except NotFoundError:
                if variant == "fp32":
                    raise
                logger.warning("%s has no %s variant; serving fp32", model_id, variant)
                predictor = load_predictor(mv.artifact_uri, **checks)
        except ArtifactIntegrityError as e:
            self._refuse(model_id, name, version, e)
            raise
        self._refused.pop(model_id, None)
        sig = mv.signature or predictor.signature
        served_cfg = self.cfg.model(name)
        return ServedModel.with_refs(
            model_id,
            predictor,
            parse_signature(sig) if sig else None,
            served_cfg.features if served_cfg else None,
        )

    def _refuse(self, model_id: str, name: str, version: int, err: ArtifactIntegrityError) -> None:
        """Log a refused artifact and report it once per replica as an ``artifact_tampered``
        registry event (audit, subscribers, webhooks, alerts), in the background."""
        first = model_id not in self._refused
        self._refused[model_id] = (time.monotonic(), err)
        self.refused_loads += 1
        logger.error("refusing to load %s (%s pool): %s", model_id, self.pool, err.message)
        if not first:
            return
        payload = {
            "version": version,
            "model_id": model_id,
            "pool": self.pool,
            "message": err.message,
            **{k: v for k, v in err.context.items() if k != "uri"},
        }

        def report() -> None:
            try:
                self._platform_client().registry._rpc.command(
                    "record_event", kind="artifact_tampered", model=name, payload=payload
                )
            except Exception:  # noqa: BLE001 - the refusal stands; the log has it
                logger.exception("could not record artifact_tampered for %s", model_id)

        self._io.submit(report)

    async def _load_now(self, model_id: str) -> ServedModel:
        t0 = time.perf_counter()
        model = await asyncio.get_running_loop().run_in_executor(
            self._io, self._load_sync, model_id
        )
        model.batched = self._make_batched(model_id)
        self._loaded[model_id] = model
        self.loads += 1
        logger.info("loaded %s in %.0f ms", model_id, (time.perf_counter() - t0) * 1000)
        return model

    async def _load_model(self, model_id: str) -> ServedModel:
        # A load outlives the request that started it: a caller that times out (and is
        # cancelled) must not throw away a half-done load, or a slow load would never finish.
        task = self._loading.get(model_id)
        if task is None:
            task = self._loading[model_id] = asyncio.ensure_future(self._load_now(model_id))
        try:
            model = await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._loading.pop(model_id, None)
            raise
        self._loading.pop(model_id, None)  # the multiplexer holds it now (and may evict it)
        return model

    # -- serving -----------------------------------------------------------------------------

    async def predict(self, item: dict[str, Any]) -> dict[str, Any]:
        """Answer one request ``{"features"?, "entity"?, "validated"?}`` for the multiplexed id
        of the call: ``{"prediction", "probability"[, "features"]}`` or ``{"error": {...}}``."""
        model_id = serve.get_multiplexed_model_id()
        self.requests += 1
        self._inflight += 1
        self.max_inflight_seen = max(self.max_inflight_seen, self._inflight)
        model: ServedModel | None = None
        try:
            model = await self.get_model(model_id)
            model.inflight += 1
            b = self._batching
            if not b.enabled or (b.bypass_when_idle and model.inflight == 1):
                return (await self._run(model_id, [item]))[0]
            return await model.batched(item)
        finally:
            self._inflight -= 1
            if model is not None:
                model.inflight -= 1

    async def _run(self, model_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Features (one online lookup), validation, one forward pass, answers."""
        self.batch_sizes[len(items)] += 1
        model: ServedModel = await self.get_model(model_id)
        n = len(items)
        out: list[dict[str, Any] | None] = [None] * n
        rows: list[dict[str, Any] | None] = [None] * n
        with_entity = [i for i, it in enumerate(items) if it.get("entity")]
        if with_entity:
            await self._entity_rows(model, items, with_entity, rows, out)
        for i, it in enumerate(items):
            if out[i] is not None:
                continue
            if rows[i] is None:
                rows[i] = it.get("features") or {}
            if model.signature is not None and not (
                it.get("validated") and rows[i] is it.get("features")
            ):
                try:
                    rows[i] = validate_request(model.signature, rows[i])
                except RayMLPError as e:
                    out[i] = e.to_dict()
                except (OverflowError, ValueError, TypeError) as e:  # a value no rule foresaw
                    out[i] = ValidationError(
                        f"features: {e} (rule: values the signature's types can hold)",
                        field="features",
                        rule="valid value",
                    ).to_dict()
        ok = [i for i in range(n) if out[i] is None]
        if ok:
            probs = await self._forward(model, [rows[i] for i in ok])
            for k, i in enumerate(ok):
                if isinstance(probs[k], dict):  # this row alone failed the forward pass
                    out[i] = probs[k]
                    continue
                p = float(probs[k])
                if not math.isfinite(p):
                    out[i] = ValidationError(
                        "the model produced a non-finite probability",
                        field="probability",
                        rule="finite",
                    ).to_dict()
                    continue
                ans: dict[str, Any] = {"prediction": model.label(p), "probability": p}
                if items[i].get("entity"):
                    ans["features"] = rows[i]
                out[i] = ans
        self.errors += sum(1 for a in out if a and "error" in a)
        return out  # type: ignore[return-value]

    async def _forward(self, model: ServedModel, batch: list[Any]) -> list[Any]:
        """One forward pass for ``batch``: a probability per row. When the pass fails, each row
        is scored alone, so a row that breaks the model fails alone (an error dict in its
        place) and never its batch-mates."""
        loop = asyncio.get_running_loop()
        try:
            return list(
                await loop.run_in_executor(model.executor, model.predictor.predict_proba, batch)
            )
        except Exception as e:  # noqa: BLE001 - isolated below
            if len(batch) == 1:
                return [_model_error_dict(e, model.model_id)]
        out: list[Any] = []
        for row in batch:
            try:
                probs = await loop.run_in_executor(
                    model.executor, model.predictor.predict_proba, [row]
                )
                out.append(probs[0])
            except Exception as e:  # noqa: BLE001 - this row's answer is its error
                out.append(_model_error_dict(e, model.model_id))
        return out

    async def _entity_rows(
        self,
        model: ServedModel,
        items: list[dict[str, Any]],
        idx: list[int],
        rows: list[Any],
        out: list[Any],
    ) -> None:
        """One online-store call for every entity request of the batch."""
        if not model.lookup:
            for i in idx:
                out[i] = ValidationError(
                    f"model {model.name!r} version {model.version} records no feature "
                    "references: send 'features' (or set 'features' in the serve config)",
                    field="entity",
                    rule="features known",
                ).to_dict()
            return
        entity_rows = [{**(items[i].get("features") or {}), **items[i]["entity"]} for i in idx]
        features = self._platform_client().features
        self.feature_calls += 1
        loop = asyncio.get_running_loop()
        try:
            fetched = await loop.run_in_executor(
                self._io, features.get_online_features, entity_rows, model.lookup
            )
        except Exception as e:  # noqa: BLE001 - whose fault it is is decided below
            if isinstance(e, (UnavailableError, StorageError)) or len(idx) == 1:
                # the store itself is down (or the request was alone): the same answer for all
                for i in idx:
                    out[i] = _error_dict(e, model.model_id)
                return
            # One bad entity (a missing join key, a wrong type) must fail alone: look each
            # request up on its own, so its batch-mates still get their features.
            self.feature_calls += len(idx)
            singles = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        self._io, features.get_online_features, [row], model.lookup
                    )
                    for row in entity_rows
                ),
                return_exceptions=True,
            )
            fetched = []
            for i, res in zip(idx, singles, strict=True):
                if isinstance(res, BaseException):
                    out[i] = _error_dict(res, model.model_id)
                    fetched.append(None)
                else:
                    fetched.append(res[0])
        sig_inputs = model.signature.inputs if model.signature is not None else []
        for j, i in enumerate(idx):
            row = fetched[j]
            if row is None:  # its own lookup failed (out[i] holds the error)
                continue
            status = row.get("_status") or {}
            if status and all(s == "not_found" for s in status.values()):
                out[i] = NotFoundError(
                    f"entity {items[i]['entity']!r} has no online features",
                    kind="entity",
                    name=str(items[i]["entity"]),
                ).to_dict()
                continue
            feats = {inp: row.get(col) for col, inp in model.column_to_input.items()}
            feats.update(items[i].get("features") or {})
            for spec in sig_inputs:  # imputed inputs the store did not have
                if spec.nullable and spec.name not in feats:
                    feats[spec.name] = None
            rows[i] = feats

    def _make_room(self, model_id: str, protect: set[str]) -> None:
        """Before loading ``model_id``: order Serve's multiplexed LRU so that the version it
        unloads to make room is one outside ``protect`` (the versions that get traffic), or
        refuse (429) when every loaded version is protected. Reads Serve's model cache (the
        wrapper ``serve.multiplexed`` keeps on the decorated function)."""
        wrapper = getattr(self._load_fn, "__serve_multiplex_wrapper", None)
        models = getattr(wrapper, "models", None)
        cap = self.settings.max_models_per_replica
        if models is None or model_id in models or len(models) < cap:
            return
        if all(m in protect for m in models):
            raise OverloadedError(
                f"no room to load {model_id!r}: the {len(models)} loaded versions all get "
                f"traffic (rule: model_server.max_models_per_replica = {cap}; a pinned version "
                "never evicts a served one)",
                model=model_id,
                rule="model_server.max_models_per_replica",
                retry_after_s=1,
            )
        for m in [m for m in models if m in protect]:
            models.move_to_end(m)

    async def warmup(self, protect: list[str] | None = None) -> dict[str, Any]:
        """Load the multiplexed version and score a probe row: the blue-green warm-up.

        ``protect``: for a pinned version, the versions that get traffic; loading never
        unloads one of them (:meth:`_make_room`)."""
        model_id = serve.get_multiplexed_model_id()
        if protect is not None:
            self._make_room(model_id, set(protect))
        t0 = time.perf_counter()
        model: ServedModel = await self.get_model(model_id)
        t1 = time.perf_counter()
        probs = await asyncio.get_running_loop().run_in_executor(
            model.executor, model.predictor.predict_proba, [model.probe_row()]
        )
        p = float(probs[0])
        if not math.isfinite(p):
            raise ValidationError(
                f"{model_id}: the probe produced {p}", field="probability", rule="finite"
            )
        if model.lookup:  # resolve the online-feature plan now, not on the first request
            features = self._platform_client().features
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._io, features.get_online_features, [], model.lookup
                )
            except Exception as e:  # noqa: BLE001 - entity requests will report it
                logger.warning("%s: online features not ready: %s", model_id, e)
        return {
            "model_id": model_id,
            "load_ms": (t1 - t0) * 1000,
            "probe_ms": (time.perf_counter() - t1) * 1000,
            "probability": p,
            "pool": self.pool,
        }

    def __del__(self) -> None:
        # Serve calls it when the replica stops: writes stop waiting for this near-cache.
        platform = getattr(self, "_platform", None)
        if platform is not None:
            platform.close()

    def loaded_models(self) -> list[str]:
        """The version ids loaded in this replica."""
        return sorted(self._loaded.keys())

    def stats(self) -> dict[str, Any]:
        """Counters of this replica (batch sizes show batching at work)."""
        sizes = self.batch_sizes
        n = sum(sizes.values())
        return {
            "pool": self.pool,
            "requests": self.requests,
            "errors": self.errors,
            "batches": n,
            "mean_batch_size": (sum(k * v for k, v in sizes.items()) / n if n else 0.0),
            "max_batch_size_seen": max(sizes) if sizes else 0,
            "batch_size_histogram": {int(k): int(v) for k, v in sorted(sizes.items())},
            "max_inflight_seen": self.max_inflight_seen,
            "feature_calls": self.feature_calls,
            "loads": self.loads,
            "refused_loads": self.refused_loads,
            "loaded": self.loaded_models(),
            "batching": self._batching.model_dump(),
            "near_cache": self._platform.near_cache_stats() if self._platform else None,
        }
