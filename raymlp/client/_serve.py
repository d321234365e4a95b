"""``p.serve``: deploy the serving application and steer its traffic.

The application's routing follows the registry, so traffic changes are registry writes (durable,
audited, evented) that every gateway replica applies within seconds — no redeploy::

    p = raymlp.connect()
    url = p.serve.deploy("configs/serve/churn.yaml")     # http://127.0.0.1:8000
    p.serve.canary("customer-churn", version=4, weight=10)   # 10% of entities, sticky
    p.serve.shadow("customer-churn", version=5)              # copies, compared, never answered
    p.serve.promote("customer-churn")       # canary: next step of its plan, or make it stable
    p.serve.blue_green("customer-churn", version=4)   # warm up, then switch the alias at once
    p.serve.rollback("customer-churn")      # canary off, or the alias back to its standby
    p.serve.status()
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from raymlp.config import ServeAppConfig
from raymlp.errors import ConflictError, NotFoundError, UnavailableError, ValidationError
from raymlp.serving import deploy as _deploy
from raymlp.serving.deploy import DEFAULT_APP

if TYPE_CHECKING:
    from raymlp.client import Platform

__all__ = ["ServeClient", "DEFAULT_APP"]


class ServeClient:
    """The serving namespace of a :class:`~raymlp.client.Platform` (``p.serve``).

    Deployment is :mod:`raymlp.serving.deploy`; traffic changes are registry writes."""

    #: How long traffic commands wait for the gateways to apply a change.
    apply_timeout_s: float = 30.0

    def __init__(self, platform: Platform) -> None:
        self._p = platform

    # -- deployment ------------------------------------------------------------------------

    @staticmethod
    def load_config(
        config: str | os.PathLike[str] | ServeAppConfig | dict[str, Any],
    ) -> ServeAppConfig:
        """A :class:`ServeAppConfig` from a path, a dict or itself (errors name the field)."""
        return _deploy.load_app_config(config)

    def deploy(self, config: str | os.PathLike[str] | ServeAppConfig | dict[str, Any]) -> str:
        """Deploy (or update in place) the application; returns its URL once every gateway
        replica has warmed the stable versions. Idempotent."""
        return _deploy.deploy(self._p.config, config)

    def delete(self, app: str | None = None) -> None:
        """Remove the application (Serve itself keeps running)."""
        _deploy.delete(self._p.config, app)

    def _url_for(self, cfg: ServeAppConfig) -> str:
        return _deploy.url_for(self._p.config, cfg)

    def _deployed(self, app: str | None = None) -> dict[str, Any]:
        return _deploy.deployed(self._p.config, app)

    def _app_name(self, app: str | None) -> str:
        return _deploy.app_name(self._p.config, app)

    def config(self, app: str | None = None) -> ServeAppConfig:
        """The config the application was deployed with."""
        return _deploy.config_of(self._p.config, app)

    def url(self, app: str | None = None) -> str:
        """Base URL of the application's HTTP API."""
        return self._deployed(app)["url"]

    def handle(self, app: str | None = None) -> Any:
        """A DeploymentHandle on the Gateway (``await h.infer.remote({...})``)."""
        return _deploy.gateway_handle(self._p.config, app)

    def predict(
        self,
        model_id: str,
        features: dict[str, Any] | None = None,
        *,
        entity: dict[str, Any] | None = None,
        version: int | None = None,
        app: str | None = None,
    ) -> dict[str, Any]:
        """One prediction through the Gateway handle (same path as HTTP, no proxy)."""
        body: dict[str, Any] = {"model_id": model_id}
        if features is not None:
            body["features"] = features
        if entity is not None:
            body["entity"] = entity
        if version is not None:
            body["version"] = version
        return self.handle(app).infer.remote(body).result()

    def status(self, app: str | None = None, refresh: bool = False) -> dict[str, Any]:
        """Application and deployment states, and every model's routing (versions, traffic,
        breakers, shadow comparison)."""
        from ray import serve

        name = self._app_name(app)
        st = serve.status().applications.get(name)
        if st is None:
            raise NotFoundError(
                f"serving application {name!r} is not running", kind="application", name=name
            )
        out: dict[str, Any] = {
            "app": name,
            "status": str(st.status.value if hasattr(st.status, "value") else st.status),
            "deployments": {
                d: {
                    "status": str(getattr(ds.status, "value", ds.status)),
                    "replicas": dict(ds.replica_states),
                }
                for d, ds in st.deployments.items()
            },
        }
        try:
            out["url"] = self.url(name)
        except NotFoundError:
            out["url"] = None
        try:
            out["models"] = self.handle(name).routing_status.remote(refresh).result(timeout_s=60)
        except Exception as e:  # noqa: BLE001 - a starting gateway: report what we have
            out["models"] = None
            out["models_error"] = str(e)
        return out

    # -- traffic -----------------------------------------------------------------------------

    def _registry_traffic(self, model: str, **changes: Any) -> dict[str, Any]:
        set_traffic = getattr(self._p.registry, "set_traffic", None)
        if set_traffic is None:
            raise UnavailableError(
                "this registry keeps no traffic state yet (set_traffic)", component="registry"
            )
        return set_traffic(model, **changes)

    def traffic(self, model: str) -> dict[str, Any]:
        """The registry's traffic state of ``model`` (canary, shadow, standby, steps)."""
        get_traffic = getattr(self._p.registry, "get_traffic", None)
        if get_traffic is None:
            return {}
        return get_traffic(model) or {}

    def _wait(self, model: str, check: Any, app: str | None, wait: bool) -> dict[str, Any]:
        """Poll the gateway until ``check(route)`` holds (events apply within seconds)."""
        if not wait:
            return {}
        h = self.handle(app).routing_status
        deadline = time.monotonic() + self.apply_timeout_s
        refresh = False
        route: dict[str, Any] = {}
        while True:
            routes = h.remote(refresh).result(timeout_s=self.apply_timeout_s + 60)
            route = routes.get(model) or {}
            if check(route):
                return route
            if time.monotonic() > deadline:
                if refresh:
                    raise UnavailableError(
                        f"the gateway did not apply the change to {model!r} in "
                        f"{self.apply_timeout_s:.0f}s (problems: {route.get('problems')})",
                        model=model,
                    )
                refresh = True  # last resort: make it re-read the registry now
                deadline = time.monotonic() + self.apply_timeout_s
                continue
            time.sleep(0.1)

    def canary(
        self,
        model: str,
        version: int,
        weight: float,
        *,
        steps: list[float] | None = None,
        reason: str = "",
        app: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Send ``weight`` percent of ``model``'s entities to ``version`` (sticky per entity).
        ``steps`` records the step plan (e.g. ``[5, 25, 50, 100]``) that :meth:`promote` and
        the monitor follow. Returns the gateway's route once applied."""
        weight = _check_weight(weight)
        changes: dict[str, Any] = {
            "canary_version": version,
            "canary_weight": weight,
            "reason": reason or f"canary {weight}%",
        }
        if steps is not None:
            changes["steps"] = list(steps)
        self._registry_traffic(model, **changes)
        return self._wait(
            model,
            lambda r: (
                (
                    (r.get("canary") or {}).get("version") == version
                    and (r.get("canary") or {}).get("weight") == float(weight)
                )
                or (weight == 0 and not r.get("canary"))
            ),
            app,
            wait,
        )

    def shadow(
        self,
        model: str,
        version: int | None,
        *,
        reason: str = "",
        app: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Copy live traffic of ``model`` to ``version`` (None: stop shadowing)."""
        self._registry_traffic(model, shadow_version=version, reason=reason or f"shadow {version}")
        return self._wait(model, lambda r: r.get("shadow_version") == version, app, wait)

    def _alias(self, model: str, app: str | None) -> str:
        try:
            served = self.config(app).model(model)
        except NotFoundError:
            served = None
        return served.alias if served is not None else "production"

    def warm_up(self, model: str, version: int, app: str | None = None) -> dict[str, Any]:
        """Load ``version`` on a primary model server and score a probe row."""
        h = _deploy.model_server_handle(self._p.config, app)
        return (
            h.options(multiplexed_model_id=f"{model}:{int(version)}", method_name="warmup")
            .remote()
            .result(timeout_s=300)
        )

    def blue_green(
        self, model: str, version: int, *, app: str | None = None, wait: bool = True
    ) -> dict[str, Any]:
        """Blue-green switch: warm ``version`` up, move the served alias to it in one registry
        write (the previous holder becomes the standby, still loaded), wait for the gateways.
        An alias that needs approval raises PermissionDeniedError: request the promotion, and
        the gateways switch (warm) when it is approved."""
        alias = self._alias(model, app)
        self._p.registry.get(model, version=version)  # NotFoundError before anything moves
        self.warm_up(model, version, app)
        previous = None
        try:
            previous = self._p.registry.get(model, alias=alias).version
        except NotFoundError:
            pass
        if previous != version:
            self._p.registry.promote(model, version, alias)
            if previous is not None and getattr(self._p.registry, "set_traffic", None):
                self._registry_traffic(
                    model, standby_version=previous, reason=f"blue-green {previous} -> {version}"
                )
        return self._wait(model, lambda r: r.get("stable_version") == version, app, wait)

    def promote(self, model: str, *, app: str | None = None, wait: bool = True) -> dict[str, Any]:
        """Advance the canary: to the next weight of its step plan, or — at the last step or
        without a plan — make it the stable version (blue-green) and end the canary."""
        t = self.traffic(model)
        version, weight = t.get("canary_version"), float(t.get("canary_weight") or 0.0)
        if version is None:
            raise ConflictError(
                f"model {model!r} has no canary to promote (start one with `raymlp serve canary`)",
                model=model,
            )
        steps = [float(s) for s in t.get("steps") or []]
        nxt = next((s for s in steps if s > weight), None)
        if nxt is not None and nxt < 100:
            return self.canary(
                model, version, nxt, reason=f"step {weight}% -> {nxt}%", app=app, wait=wait
            )
        route = self.blue_green(model, version, app=app, wait=wait)
        self._registry_traffic(
            model, canary_version=None, canary_weight=0.0, reason=f"canary {version} promoted"
        )
        return self._wait(model, lambda r: not r.get("canary"), app, wait) or route

    def rollback(self, model: str, *, app: str | None = None, wait: bool = True) -> dict[str, Any]:
        """One-command rollback: a live canary goes to weight 0; otherwise the served alias
        goes back to its previous holder (the warm standby)."""
        t = self.traffic(model)
        if t.get("canary_version") is not None and float(t.get("canary_weight") or 0) > 0:
            return self.canary(
                model, int(t["canary_version"]), 0.0, reason="rollback", app=app, wait=wait
            )
        alias = self._alias(model, app)
        res = self._p.registry.rollback(model, alias)
        target = res.get("version") if isinstance(res, dict) else None
        return self._wait(
            model, lambda r: target is None or r.get("stable_version") == target, app, wait
        )


def _check_weight(weight: Any) -> float:
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise ValidationError(
            f"weight {weight!r} is not a number", field="weight", value=weight, rule="0..100"
        ) from None
    if not 0 <= w <= 100:
        raise ValidationError(
            f"weight {w} is out of range (rule: 0..100)", field="weight", value=w, rule="0..100"
        )
    return w
