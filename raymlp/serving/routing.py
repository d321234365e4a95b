"""The routing table: which version answers a request for a model.

One :class:`ModelRoute` per served model, rebuilt from the registry whenever it changes
(the gateway swaps the whole object, so a request never sees half an update). It holds:

- ``stable``: the holder of the served alias (``production``): answers with route ``primary``;
- ``canary`` + ``canary_weight`` (percent): a share of entities, chosen by a hash of the routing
  key, so one entity always lands on the same side while the weight stays put, and raising the
  weight only moves entities from stable to canary (never back);
- ``shadow``: receives copies (never answers);
- ``standby``: the previous stable version, kept warm for a one-command rollback;
- ``fallback``: the fallback model version (from config or the stable version's lineage).

:func:`choose` is the pure decision::

    >>> route = ModelRoute(name="churn", stable=VersionInfo("churn", 3), canary=VersionInfo("churn", 4),
    ...                    canary_weight=10.0)
    >>> choose(route, "customer-42")[1] in ("primary", "canary")
    True
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raymlp.registry.signature import Signature, parse_signature

__all__ = ["VersionInfo", "Traffic", "ModelRoute", "bucket", "choose", "BUCKETS"]

#: Resolution of the canary split: weights are honoured to 0.01 percent.
BUCKETS = 10_000


@dataclass(frozen=True)
class VersionInfo:
    """What the gateway knows of one registered version."""

    model: str
    version: int
    tenant: str = "default"
    signature: Signature | None = None
    #: the lineage's fallback model: ``{"name", "version"|"alias"}``
    lineage_fallback: dict[str, Any] | None = None

    @property
    def model_id(self) -> str:
        """The multiplexed model id the model servers load (``name:version``)."""
        return f"{self.model}:{self.version}"

    @classmethod
    def from_model_version(cls, mv: Any) -> VersionInfo:
        """From the registry client's ``ModelVersion`` (or its dict)."""
        get: Callable[..., Any] = (
            mv.get if isinstance(mv, dict) else (lambda k, d=None: getattr(mv, k, d))
        )
        sig = get("signature")
        lineage = get("lineage") or {}
        return cls(
            model=get("name"),
            version=int(get("version")),
            tenant=get("tenant") or "default",
            signature=parse_signature(sig) if sig else None,
            lineage_fallback=lineage.get("fallback_model") or None,
        )


@dataclass(frozen=True)
class Traffic:
    """The live traffic state of a model, as the registry keeps it (``get_traffic``)."""

    canary_version: int | None = None
    canary_weight: float = 0.0
    shadow_version: int | None = None
    standby_version: int | None = None
    steps: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Traffic:
        d = d or {}
        return cls(
            canary_version=_opt_int(d.get("canary_version")),
            canary_weight=float(d.get("canary_weight") or 0.0),
            shadow_version=_opt_int(d.get("shadow_version")),
            standby_version=_opt_int(d.get("standby_version")),
            steps=tuple(float(s) for s in d.get("steps") or ()),
        )


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True)
class ModelRoute:
    """How requests for one model are routed right now (immutable; replaced on change)."""

    name: str
    alias: str = "production"
    tenant: str | None = None
    stable: VersionInfo | None = None
    canary: VersionInfo | None = None
    canary_weight: float = 0.0
    shadow: VersionInfo | None = None
    standby: int | None = None
    fallback: VersionInfo | None = None
    traffic: Traffic = field(default_factory=Traffic)
    #: problems of the last refresh (a version that failed to warm up, ...)
    problems: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.stable is not None

    def describe(self) -> dict[str, Any]:
        """The ``GET /v1/models/{id}`` view of the route."""
        return {
            "model_id": self.name,
            "alias": self.alias,
            "tenant": self.tenant,
            "stable_version": self.stable.version if self.stable else None,
            "canary": (
                {"version": self.canary.version, "weight": self.canary_weight}
                if self.canary
                else None
            ),
            "shadow_version": self.shadow.version if self.shadow else None,
            "standby_version": self.standby,
            "fallback": (
                {"model": self.fallback.model, "version": self.fallback.version}
                if self.fallback
                else None
            ),
            "steps": list(self.traffic.steps),
            "ready": self.ready,
            "problems": list(self.problems),
        }


def bucket(model: str, salt: Any, key: str) -> int:
    """The entity's bucket in ``[0, BUCKETS)``: a stable hash of model, salt and routing key."""
    digest = hashlib.blake2b(f"{model}\x1f{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def choose(
    route: ModelRoute, routing_key: str | None, rng: random.Random | None = None
) -> tuple[VersionInfo | None, str]:
    """``(version, route label)`` for a request: the canary for the entities whose bucket falls
    under the weight, else stable. Without a routing key the draw is random (not sticky).

    The salt is the canary version, so a new canary draws a fresh sample of entities while one
    canary's weight changes keep its entities where they are.
    """
    canary = route.canary
    weight = route.canary_weight
    if (
        canary is None
        or weight <= 0
        or (route.stable is not None and canary.version == route.stable.version)
    ):
        return route.stable, "primary"
    if weight >= 100:
        return canary, "canary"
    if routing_key is None:
        b = (rng or random).randrange(BUCKETS)
    else:
        b = bucket(route.name, canary.version, routing_key)
    if b < weight * (BUCKETS / 100):
        return canary, "canary"
    return route.stable, "primary"
