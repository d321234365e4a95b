"""The ``Gateway`` deployment: the FastAPI ingress of the serving application.

Per request: bound the body (size, finite numbers: :mod:`raymlp.serving.limits`), authenticate
(API key → principal and tenant), admit it (per-tenant rate limits and the in-flight bound,
both counted in instances), tokenize its sensitive inputs (raw values of sensitive features and
join keys become the feature store's tokens before anything else sees them:
:mod:`raymlp.serving.sensitive`), validate against the model signature, pick the version (stable,
sticky canary, or a pinned ``version``: only a served one unless the caller develops that
model's tenant), answer from the response cache or through the fallback chain (primary →
fallback model → rule → default, each guarded by a breaker of its own per tenant), copy to the
shadow version, log the record for the monitor. Another tenant's model answers exactly as a
model that is not served (404). Errors always have one shape (:mod:`raymlp.serving.errors`).
The routing table follows the registry live (:mod:`raymlp.serving.route_updater`).

Endpoints: ``POST /v1/predictions``, ``POST /v1/predictions:batch``, ``POST /v1/feedback``,
``GET /v1/models``, ``GET /v1/models/{model_id}``, ``GET /healthz``, ``GET /readyz``; the
OpenAPI document is ``/openapi.json`` (docs at ``/docs``).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at
# runtime, and the deployment class travels to replicas by value (cloudpickle), where string
# annotations could not be resolved.
import asyncio
import logging
import time
import uuid
from collections import Counter
from typing import Any

from fastapi import Depends, Request
from pydantic import ValidationError as PydanticValidationError
from ray import serve
from starlette.responses import Response

from raymlp.config import Principal, ServeAppConfig
from raymlp.errors import (
    ModelError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RayMLPError,
    UnavailableError,
    ValidationError,
    error_for_code,
)
from raymlp.monitoring.records import normalize_feedback
from raymlp.registry.signature import validate_request
from raymlp.serving.api import (
    ERROR_RESPONSES,
    app,
    json_response,
    optional_principal,
    raise_remote,
    request_error,
    request_id,
    set_authenticator,
)
from raymlp.serving.api import principal as caller
from raymlp.serving.auth import Authenticator
from raymlp.serving.breaker import BreakerBoard
from raymlp.serving.cache import ResponseCache, cache_key
from raymlp.serving.chain import Answer, Step, run_chain
from raymlp.serving.errors import error_body
from raymlp.serving.ledger import RequestLedger
from raymlp.serving.limits import RateLimiter, set_body_limit
from raymlp.serving.predlog import PredictionLog
from raymlp.serving.route_updater import WATCHED_EVENTS, RoutingTable
from raymlp.serving.routing import ModelRoute, VersionInfo, choose
from raymlp.serving.schemas import (
    BatchPredictionRequest,
    BatchPredictionResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    Instance,
    ModelsResponse,
    PredictionRequest,
    PredictionResponse,
    ReadyResponse,
)
from raymlp.serving.sensitive import SensitiveGuard
from raymlp.serving.shadow import ShadowRunner

__all__ = ["Gateway", "app"]

logger = logging.getLogger(__name__)

#: How long ``POST /v1/feedback`` waits for its label to reach the monitor.
FEEDBACK_STORE_TIMEOUT_S = 10.0


@serve.deployment
@serve.ingress(app)
class Gateway:
    """The ingress (see the module docstring). Built by :func:`raymlp.serving.app.build_app`."""

    async def __init__(  # type: ignore[misc]  # Ray Serve awaits an async deployment constructor
        self,
        app_config: dict[str, Any],
        model_server: Any,
        fallback_server: Any = None,
        platform_config: dict[str, Any] | None = None,
    ) -> None:
        from raymlp.serving._platform import service_platform

        self.cfg = ServeAppConfig.model_validate(app_config)
        self._pools = {"primary": model_server, "fallback": fallback_server or model_server}
        self._handles: dict[tuple[str, str, str], Any] = {}
        loop = asyncio.get_running_loop()
        self._platform = await loop.run_in_executor(
            None, service_platform, self.cfg.principal, platform_config
        )
        self.auth = Authenticator(self._platform.config.auth)
        set_authenticator(self.auth)
        set_body_limit(self.cfg.gateway.max_body_bytes)
        self.limiter = RateLimiter(self.cfg.gateway.rate_limit)
        self.ledger = RequestLedger(self.cfg.gateway.feedback_window)
        self.cache = ResponseCache(self.cfg.cache.max_entries, self.cfg.cache.ttl.total_seconds())
        self.breakers = BreakerBoard(self.cfg.breaker)
        self.log = PredictionLog(self._platform, self.cfg.prediction_log)
        self.shadow = ShadowRunner(self.cfg.shadow, report=self.log.prediction)
        self._models = {m.name: m for m in self.cfg.models}
        self.sensitive = SensitiveGuard(self._platform, self._models)
        self.table = RoutingTable(self.cfg, self._platform.registry, self._warm)
        self._inflight = 0
        self.counts: Counter[str] = Counter()
        try:
            await asyncio.wait_for(self.table.refresh_all(), self.cfg.timeouts.warmup_s)
        except TimeoutError:
            logger.warning("initial warm-up did not finish in %ss", self.cfg.timeouts.warmup_s)
        self._loop = loop
        self._watcher = await loop.run_in_executor(
            None, lambda: self._platform.registry.subscribe(self._on_event, kinds=WATCHED_EVENTS)
        )
        self._periodic = asyncio.ensure_future(self._refresh_periodically())

    # -- registry events and warm-up ---------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        """Called on the watcher's thread: hand over to the event loop."""
        for name in self.table.affected(event):
            self._loop.call_soon_threadsafe(self.table.schedule, name)

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.gateway.refresh_interval_s)
            await self.table.refresh_all()
            await self.sensitive.refresh_definitions()

    def _handle(self, pool: str, model_id: str, method: str = "predict") -> Any:
        key = (pool, model_id, method)
        h = self._handles.get(key)
        if h is None:
            h = self._handles[key] = self._pools[pool].options(
                multiplexed_model_id=model_id, method_name=method
            )
        return h

    async def _warm(self, pool: str, vi: VersionInfo, protect: list[str] | None = None) -> Any:
        await self.sensitive.prepare(vi)  # its sensitive inputs, before it gets traffic
        handle = self._handle(pool, vi.model_id, "warmup")
        return await (handle.remote() if protect is None else handle.remote(protect=protect))

    async def _call(self, pool: str, model_id: str, item: dict[str, Any]) -> dict[str, Any]:
        resp = self._handle(pool, model_id).remote(item)
        try:
            out = await resp
        except asyncio.CancelledError:
            resp.cancel()  # a timed-out step: free the server's slot
            raise
        return raise_remote(out)

    # -- the prediction path -----------------------------------------------------------------

    def _route(self, principal: Principal, model_id: str) -> ModelRoute:
        route = self.table.get(model_id)
        # Another tenant's model is answered exactly like one that is not served: a 403
        # would confirm to the caller that the name exists.
        if route is None or not self.auth.can_see(principal, route.tenant):
            raise NotFoundError(
                f"model {model_id!r} is not served here", kind="model", name=model_id
            )
        return route

    @staticmethod
    def _breaker_key(principal: Principal, model_id: str) -> str:
        """Breakers are per tenant and version: one tenant's traffic (a flood of bad
        instances) can open its own breaker, never another tenant's."""
        return f"{model_id}@{principal.tenant or '-'}"

    @staticmethod
    def _check_pin(principal: Principal, route: ModelRoute, pinned: int) -> None:
        """A pinned ``version`` must be served (stable, canary, shadow or warm standby)
        unless the caller is a developer of the model's tenant (or an admin): pinning must not
        put an unapproved version in front of real callers."""
        served = {v.version for v in (route.stable, route.canary, route.shadow) if v is not None}
        if route.standby is not None:
            served.add(route.standby)
        if pinned in served:
            return
        roles = set(principal.roles)
        if "admin" in roles or (
            "developer" in roles and (route.tenant is None or route.tenant == principal.tenant)
        ):
            return
        raise PermissionDeniedError(
            f"version {pinned} of model {route.name!r} is not served (served: "
            f"{sorted(served) or 'none'}) (rule: only served versions may be pinned, unless "
            "the caller is a developer of the model's tenant)",
            field="version",
            value=pinned,
            principal=principal.name,
            model=route.name,
            rule="version pinning",
        )

    async def _protect(
        self, principal: Principal, route: ModelRoute, inst: Instance, pinned: int | None
    ) -> Instance:
        """``inst`` with tokens in place of raw sensitive values (:mod:`raymlp.serving.sensitive`),
        before anything routes, validates, caches, answers or logs it: the model sees the token
        the feature store held at training time. ``inst`` itself for a model without sensitive
        inputs."""
        await self.sensitive.for_route(route)  # known (and cached) before any refusal below
        pinned_vi = None
        if pinned is not None:
            self._check_pin(principal, route, pinned)
            pinned_vi = await self.table.version(route.name, pinned)
        return await self.sensitive.protect(route, inst, pinned_vi)

    async def _warm_pin(self, vinfo: VersionInfo) -> None:
        """Load a pinned version that gets no traffic within ``timeouts.pin_warmup_s``, never
        by evicting one that does (the model server refuses with 429 instead); a timeout is a
        503, never a hang. Not remembered as warm: the server may unload it again."""
        served = self.table.served_ids()
        if vinfo.model_id in served:
            return  # its route's warm-up loaded it
        timeout = self.cfg.timeouts.pin_warmup_s
        try:
            await asyncio.wait_for(self._warm("primary", vinfo, protect=served), timeout)
        except TimeoutError:
            raise UnavailableError(
                f"pinned version {vinfo.version} of {vinfo.model!r} did not load within "
                f"{timeout}s (rule: timeouts.pin_warmup_s)",
                field="version",
                value=vinfo.version,
                rule="timeouts.pin_warmup_s",
            ) from None

    async def _answer(
        self,
        principal: Principal,
        route: ModelRoute,
        inst: Instance,
        pinned: int | None,
        routing_header: str | None,
        rid: str,
    ) -> tuple[Answer, dict[str, Any] | None, str]:
        """The answer to one instance (its sensitive values already tokenized: ``_protect``),
        the features to log, and the route label tried."""
        mcfg = self._models[route.name]
        features, entity = inst.features, inst.entity
        key_values: dict[str, Any] = {}
        if features and mcfg.entity_keys:
            key_values = {k: features[k] for k in mcfg.entity_keys if k in features}
            if key_values:
                features = {k: v for k, v in features.items() if k not in key_values}
        routing_key = routing_header
        if routing_key is None:
            ids = entity or key_values
            if ids:
                keys = mcfg.entity_keys or sorted(ids)
                routing_key = "|".join(str(ids.get(k)) for k in keys)
        vinfo: VersionInfo | None
        if pinned is not None:
            self._check_pin(principal, route, pinned)
            vinfo = await self.table.version(route.name, pinned)
            label = "primary"
            await self._warm_pin(vinfo)
        else:
            vinfo, label = choose(route, routing_key)
        validated = None
        if entity is None and vinfo is not None and vinfo.signature is not None:
            try:
                validated = validate_request(vinfo.signature, features or {})
            except (OverflowError, ValueError, TypeError) as e:
                # a value no rule of the validator foresaw (e.g. an integer beyond float64 from
                # a handle caller; HTTP bodies are refused earlier): the caller's fault, 422
                raise ValidationError(
                    f"features: {e} (rule: values the signature's types can hold)",
                    field="features",
                    rule="valid value",
                ) from None
        logged = validated if validated is not None else features
        ckey = None
        if (
            self.cfg.cache.enabled
            and vinfo is not None
            and (entity is None or self.cfg.cache.entity_requests)
        ):
            ckey = (
                cache_key(route.name, vinfo.version, validated)
                if entity is None
                else cache_key(route.name, vinfo.version, {"e": entity, "f": features}, "e")
            )
            hit = self.cache.get(ckey)
            if hit is not None:
                return (
                    Answer(
                        route="cache",
                        model_version=str(vinfo.version),
                        prediction=hit[0],
                        probability=hit[1],
                        version=vinfo.version,
                        features=hit[2],
                    ),
                    logged or hit[2],
                    label,
                )
        item = {
            "features": validated if validated is not None else features,
            "entity": entity,
            "validated": validated is not None,
        }
        raw = {"features": features, "entity": entity, "validated": False}
        steps: list[Step] = []
        timeouts = self.cfg.timeouts
        if vinfo is not None:
            steps.append(
                Step(
                    label,
                    self._breaker_key(principal, vinfo.model_id),
                    lambda: self._call("primary", vinfo.model_id, item),
                    timeouts.primary_s,
                    str(vinfo.version),
                    vinfo.version,
                )
            )
        stable = route.stable
        if label == "canary" and stable is not None:
            steps.append(
                Step(
                    "primary",
                    self._breaker_key(principal, stable.model_id),
                    lambda: self._call("primary", stable.model_id, raw),
                    timeouts.primary_s,
                    str(stable.version),
                    stable.version,
                )
            )
        fb = route.fallback
        if fb is not None:
            steps.append(
                Step(
                    "fallback",
                    self._breaker_key(principal, fb.model_id),
                    lambda: self._call("fallback", fb.model_id, raw),
                    timeouts.fallback_s,
                    fb.model_id,
                    None,
                )
            )
        live: asyncio.Future | None = None
        shadow = route.shadow
        if shadow is not None and pinned is None and shadow.version != (vinfo and vinfo.version):
            live = asyncio.get_running_loop().create_future()
            base = {
                "request_id": rid,
                "model": route.name,
                "tenant": principal.tenant,
                "features": logged,
            }
            self.shadow.start(
                route.name,
                shadow.version,
                lambda: self._call("primary", shadow.model_id, raw),
                live,
                base,
            )
        try:
            ans = await run_chain(steps, self.breakers, mcfg.rules, logged, mcfg.default_response)
        except BaseException as e:
            if live is not None:
                live.set_result(None)
            if label == "canary" and vinfo is not None:
                failures = getattr(e, "context", {}).get("failures") or []
                if f"canary: {ModelError.code}" in failures:
                    self._record_canary_error(rid, route.name, principal, vinfo, logged)
            raise
        if label == "canary" and vinfo is not None and ("canary", ModelError.code) in ans.failures:
            self._record_canary_error(rid, route.name, principal, vinfo, logged)
        if live is not None:
            live.set_result(
                {"prediction": ans.prediction, "probability": ans.probability}
                if ans.route in ("primary", "canary")
                else None
            )
        if (
            ckey is not None
            and ans.route in ("primary", "canary")
            and ans.version == (vinfo.version if vinfo else None)
        ):
            self.cache.put(ckey, (ans.prediction, ans.probability, ans.features))
        return ans, logged if entity is None else (ans.features or logged), label

    def _record(
        self,
        rid: str,
        model: str,
        principal: Principal,
        t0: float,
        ans: Answer | None,
        features: Any,
        label: str,
        err: RayMLPError | None = None,
    ) -> dict[str, Any]:
        latency_ms = (time.perf_counter() - t0) * 1000
        if ans is not None:
            self.counts[ans.route] += 1
            rec = {
                "request_id": rid,
                "model": model,
                "route": ans.route,
                "version": ans.version if ans.route in ("primary", "canary", "cache") else None,
                "tenant": principal.tenant,
                "features": features,
                "prediction": ans.prediction,
                "probability": ans.probability,
                "latency_ms": latency_ms,
                "status": "ok",
                "error_code": ans.failures[0][1] if ans.failures else None,
            }
            self.ledger.note(rid, tenant=principal.tenant, model=model)
        else:
            self.counts[f"error:{err.code if err else 'unknown'}"] += 1
            rec = {
                "request_id": rid,
                "model": model,
                "route": label,
                "version": None,
                "tenant": principal.tenant,
                "features": features,
                "prediction": None,
                "probability": None,
                "latency_ms": latency_ms,
                "status": "error",
                "error_code": err.code if err else "unknown",
            }
        self.log.prediction(rec)
        return rec

    def _record_canary_error(
        self, rid: str, model: str, principal: Principal, vinfo: VersionInfo, features: Any
    ) -> None:
        """The canary's own failure (its model raised), logged against the canary as a record
        of its own (``<request id>.canary``) beside the request's answer, which stable or the
        fallback gave. Infrastructure failures of the canary step (a dead replica, a timeout,
        an open breaker) are not logged against it: they say nothing about the version."""
        self.counts["canary_model_error"] += 1
        self.log.prediction(
            {
                "request_id": f"{rid}.canary",
                "model": model,
                "route": "canary",
                "version": vinfo.version,
                "tenant": principal.tenant,
                "features": features,
                "prediction": None,
                "probability": None,
                "latency_ms": None,  # the step's time is not the version's latency
                "status": "error",
                "error_code": ModelError.code,
            }
        )

    def _admit(self, principal: Principal, instances: int = 1) -> None:
        """Admit ``instances`` instances of ``principal``'s tenant, or raise OverloadedError
        (429): over the tenant's rate limit, or over the gateway's in-flight bound. Both count
        instances, so one large batch weighs what its instances weigh. A batch larger than the
        bound still passes an idle gateway (``max_instances_per_request`` caps it)."""
        bound = self.cfg.gateway.max_inflight
        if self._inflight and self._inflight + instances > bound:
            self.counts["shed"] += 1
            raise OverloadedError(
                f"the gateway has {self._inflight} instances in flight (rule: at most "
                f"{bound}); retry later",
                reason="max_inflight",
                retry_after_s=1,
            )
        try:
            self.limiter.admit(principal.tenant, instances)
        except OverloadedError:
            self.counts["rate_limited"] += 1
            raise

    @app.post("/v1/predictions", response_model=PredictionResponse, responses=ERROR_RESPONSES)
    async def predict(
        self, body: PredictionRequest, request: Request, principal: Principal = Depends(caller)
    ) -> Response:
        """One prediction, by features or by entity (features from the online store)."""
        t0 = time.perf_counter()
        rid = request_id(request)
        try:
            self._admit(principal)
        except OverloadedError as e:
            status, payload = error_body(e, rid)
            return json_response(payload, status)
        self._inflight += 1
        ans, feats, label = None, None, "primary"
        route: ModelRoute | None = None
        protected = False
        try:
            route = self._route(principal, body.model_id)
            inst = await self._protect(principal, route, body, body.version)
            feats, protected = inst.features, True
            ans, feats, label = await self._answer(
                principal,
                route,
                inst,
                body.version,
                request.headers.get(self.cfg.gateway.routing_header),
                rid,
            )
        except Exception as e:  # noqa: BLE001 - every failure gets the error schema
            status, payload = error_body(e, rid)
            if route is None:
                # a model that is not served (or not the caller's): no record, so made-up
                # names cannot create monitor state or tell the monitor whose a model is
                return json_response(payload, status)
            if not protected:  # refused before tokenization: only what is safe to log
                feats = self.sensitive.loggable(route, body.features)
            self._record(
                rid,
                body.model_id,
                principal,
                t0,
                None,
                feats,
                label,
                error_for_code(payload["error"]["code"])(payload["error"]["message"]),
            )
            return json_response(payload, status)
        finally:
            self._inflight -= 1
        rec = self._record(rid, body.model_id, principal, t0, ans, feats, label)
        return json_response(
            {
                "prediction": ans.prediction,
                "probability": ans.probability,
                "model_version": ans.model_version,
                "latency_ms": rec["latency_ms"],
                "request_id": rid,
                "route": ans.route,
                "model_id": body.model_id,
            }
        )

    @app.post(
        "/v1/predictions:batch", response_model=BatchPredictionResponse, responses=ERROR_RESPONSES
    )
    async def predict_batch(
        self,
        body: BatchPredictionRequest,
        request: Request,
        principal: Principal = Depends(caller),
    ) -> Response:
        """Many instances of one model; answered in order (ids ``<request_id>-<i>``)."""
        t0 = time.perf_counter()
        rid = request_id(request)
        n = len(body.instances)
        cap = self.cfg.gateway.max_instances_per_request
        try:
            if n > cap:
                raise ValidationError(
                    f"instances: {n} instances in one request (rule: at most {cap}, "
                    "gateway.max_instances_per_request; split the batch)",
                    field="instances",
                    value=n,
                    rule="max_instances_per_request",
                )
            self._admit(principal, n)
        except RayMLPError as e:
            status, payload = error_body(e, rid)
            return json_response(payload, status)
        self._inflight += n
        try:
            route = self._route(principal, body.model_id)
            header = request.headers.get(self.cfg.gateway.routing_header)
            insts: list[Instance | BaseException] = []
            for inst in body.instances:
                try:
                    insts.append(await self._protect(principal, route, inst, body.version))
                except Exception as e:  # noqa: BLE001 - this instance's answer
                    insts.append(e)

            async def answer(i: int, inst: Instance | BaseException) -> Any:
                if isinstance(inst, BaseException):
                    raise inst
                return await self._answer(
                    principal, route, inst, body.version, header, f"{rid}-{i}"
                )

            results = await asyncio.gather(
                *(answer(i, inst) for i, inst in enumerate(insts)),
                return_exceptions=True,
            )
            out = []
            for i, res in enumerate(results):
                if isinstance(res, BaseException):
                    sent = insts[i]
                    logged = (
                        self.sensitive.loggable(route, body.instances[i].features)
                        if isinstance(sent, BaseException)
                        else sent.features
                    )
                    status, payload = error_body(res, rid)
                    err = payload["error"]
                    details = err["details"] if isinstance(err["details"], dict) else {}
                    if "field" in details:
                        details["field"] = f"instances[{i}].{details['field']}"
                    details["instance"] = i
                    self._record(
                        f"{rid}-{i}",
                        body.model_id,
                        principal,
                        t0,
                        None,
                        logged,
                        "primary",
                        error_for_code(err["code"])(err["message"]),
                    )
                    return json_response(
                        {
                            "error": {
                                **err,
                                "message": f"instances[{i}]: {err['message']}",
                                "details": details,
                            }
                        },
                        status,
                    )
                ans, feats, label = res
                rec = self._record(f"{rid}-{i}", body.model_id, principal, t0, ans, feats, label)
                out.append(
                    {
                        "prediction": ans.prediction,
                        "probability": ans.probability,
                        "model_version": ans.model_version,
                        "latency_ms": rec["latency_ms"],
                        "request_id": f"{rid}-{i}",
                        "route": ans.route,
                        "model_id": body.model_id,
                    }
                )
        except Exception as e:  # noqa: BLE001
            status, payload = error_body(e, rid)
            return json_response(payload, status)
        finally:
            self._inflight -= n
        return json_response(
            {"predictions": out, "request_id": rid, "latency_ms": (time.perf_counter() - t0) * 1000}
        )

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        status_code=202,
        responses={**ERROR_RESPONSES, 409: {"model": ErrorResponse}},
    )
    async def feedback(
        self, body: FeedbackRequest, request: Request, principal: Principal = Depends(caller)
    ) -> Response:
        """The ground truth of an earlier prediction (for accuracy monitoring).

        Bound to the original request: the id must be one this service answered for the
        caller's tenant (and for ``model_id``, when given) — else 404, the same answer for an
        unknown and a foreign id; a second label is 409. 202 means the label reached the
        monitor (with the original request's model)."""
        rid = body.request_id
        try:
            self._admit(principal)
            if not (self.log.settings.enabled and self.log.connected):
                raise UnavailableError(
                    "feedback cannot be stored: the prediction log is off or has no monitor "
                    "(rule: 202 means the label was stored)",
                    reason="no prediction log",
                )
            entry = self.ledger.claim(
                rid,
                tenant=principal.tenant,
                admin="admin" in principal.roles,
                model=body.model_id,
            )
        except RayMLPError as e:
            status, payload = error_body(e)
            return json_response(payload, status)
        try:
            # the monitor's own rules (id and label shapes) before anything is queued
            normalize_feedback({"request_id": rid, "label": body.label, "model": entry.model})
            self.log.feedback(rid, body.label, entry.model)
            # PredictionLog has no flush of its own: wait on its monitor logger, which ships
            # the prediction records queued before this label first.
            sink = self.log._sink
            stored = sink is not None and await asyncio.get_running_loop().run_in_executor(
                None, sink.flush, FEEDBACK_STORE_TIMEOUT_S
            )
            if not stored:
                raise UnavailableError(
                    "the monitor did not take the label in time; retry", reason="flush timeout"
                )
        except Exception as e:  # noqa: BLE001 - every failure gets the error schema
            self.ledger.release(rid)
            status, payload = error_body(e)
            return json_response(payload, status)
        self.ledger.commit(rid)
        return json_response({"request_id": rid, "accepted": True}, 202)

    # -- introspection -------------------------------------------------------------------------

    def _describe(
        self, route: ModelRoute, detail: bool = False, principal: Principal | None = None
    ) -> dict[str, Any]:
        d = route.describe()
        if detail:
            ids = [
                v.model_id
                for v in (route.stable, route.canary, route.shadow, route.fallback)
                if v is not None
            ]
            snap = self.breakers.snapshot()
            if principal is not None:  # the caller's tenant's breakers, by version id
                keys = {mid: self._breaker_key(principal, mid) for mid in ids}
                d["breakers"] = {mid: snap[k] for mid, k in keys.items() if k in snap}
            else:  # every tenant's, keyed "name:version@tenant"
                d["breakers"] = {k: v for k, v in snap.items() if k.rpartition("@")[0] in ids}
            d["shadow_stats"] = self.shadow.stats(route.name) if route.shadow else None
            sig = route.stable.signature if route.stable else None
            d["signature"] = sig.model_dump(mode="json") if sig else None
            d["entity_keys"] = self._models[route.name].entity_keys
        return d

    @app.get("/v1/models", response_model=ModelsResponse, responses=ERROR_RESPONSES)
    async def list_models(self, principal: Principal = Depends(caller)) -> Response:
        """The served models the caller's tenant may use: versions and traffic split."""
        models = [
            self._describe(r)
            for r in self.table.routes.values()
            if self.auth.can_see(principal, r.tenant)
        ]
        return json_response({"models": models})

    @app.get("/v1/models/{model_id}", responses=ERROR_RESPONSES)
    async def get_model(self, model_id: str, principal: Principal = Depends(caller)) -> Response:
        """One served model: versions, traffic, breakers, shadow comparison, signature."""
        route = self._route(principal, model_id)
        return json_response(self._describe(route, detail=True, principal=principal))

    @app.get("/healthz")
    async def healthz(self) -> Response:
        """Alive."""
        return json_response({"status": "ok"})

    @app.get(
        "/readyz",
        response_model=ReadyResponse,
        responses={s: {"model": ErrorResponse} for s in (401, 503)},
    )
    async def readyz(self, principal: Principal | None = Depends(optional_principal)) -> Response:
        """Ready when every served model has a warm stable version. Without a key: ready or
        not, nothing else; with one: also the caller's tenant's models (stable version, or
        why not ready)."""
        routes = list(self.table.routes.values())
        ready = all(r.ready for r in routes)
        mine = (
            []
            if principal is None
            else [r for r in routes if self.auth.can_see(principal, r.tenant)]
        )
        if not ready:
            ctx: dict[str, Any] = {}
            if principal is not None:
                ctx["not_ready"] = {r.name: list(r.problems) for r in mine if not r.ready}
            status, payload = error_body(
                UnavailableError("not every served model has a warm stable version", **ctx)
            )
            return json_response(payload, status)
        out: dict[str, Any] = {"status": "ready"}
        if principal is not None:
            out["models"] = {r.name: r.stable.version for r in mine if r.stable}
        return json_response(out)

    # -- handle-only methods (ServeClient, jobs) -------------------------------------------------

    async def infer(self, request: dict[str, Any], api_key: str | None = None) -> dict[str, Any]:
        """``POST /v1/predictions`` through a DeploymentHandle (batch and streaming jobs): the
        same routing, chain, cache and log. Errors come back as ``{"error": {...}}``. Without
        ``api_key`` the caller is trusted in-cluster code and acts as the service principal."""
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex
        try:
            body = PredictionRequest.model_validate(request)
        except PydanticValidationError as e:
            return error_body(request_error(list(e.errors())), rid)[1]
        headers = {"x-api-key": api_key} if api_key else {}
        try:
            principal = (
                self.auth.authenticate(headers)
                if api_key or not self.auth.enabled
                else self._platform.principal
            )
            route = self._route(principal, body.model_id)
            inst = await self._protect(principal, route, body, body.version)
            ans, feats, label = await self._answer(principal, route, inst, body.version, None, rid)
        except Exception as e:  # noqa: BLE001
            return error_body(e, rid)[1]
        rec = self._record(rid, body.model_id, principal, t0, ans, feats, label)
        return {
            "prediction": ans.prediction,
            "probability": ans.probability,
            "model_version": ans.model_version,
            "latency_ms": rec["latency_ms"],
            "request_id": rid,
            "route": ans.route,
            "model_id": body.model_id,
        }

    async def routing_status(self, refresh: bool = False) -> dict[str, Any]:
        """Every route (``refresh``: re-read the registry first)."""
        if refresh:
            await self.table.refresh_all()
        return {n: self._describe(r, detail=True) for n, r in self.table.routes.items()}

    async def stats(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "cache": self.cache.stats(),
            "inflight": self._inflight,
            "shadow_inflight": self.shadow.inflight,
            "prediction_log": self.log.stats(),
            "refreshes": self.table.refreshes,
        }

    async def recent_records(self, n: int = 100) -> list[dict[str, Any]]:
        """The last ``n`` prediction records of this replica (debugging, tests)."""
        return list(self.log.recent)[-n:]

    def __del__(self) -> None:
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.stop()
        sensitive = getattr(self, "sensitive", None)
        if sensitive is not None:
            sensitive.close()
        log = getattr(self, "log", None)
        if log is not None:
            # a graceful stop ships what is queued; what the monitor does not take in time
            # stays in the spool for another gateway on the node
            log.close(timeout_s=2.0)
