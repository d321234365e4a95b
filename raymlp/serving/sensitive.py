"""Sensitive request inputs at the gateway: raw values become the feature store's tokens.

A feature marked ``sensitive: true`` and the join keys of an entity marked ``sensitive: true``
are stored as keyed tokens (:mod:`raymlp.features.tokenize`), so a model trained on the offline
store learned tokens. Callers may still send raw values: the gateway tokenizes them with the
platform's key before anything else happens (routing key, validation, cache, the model, the
online lookup, the prediction log, shadow copies), so the model sees the token it was trained
on and no log ever holds the raw value. A value that already is a token passes unchanged.

Which inputs of a served model are sensitive (:func:`sensitive_inputs`):

- ``features``: a model input fed by a ``view:feature`` reference (the serve config's
  ``features``, else the artifact's ``feature_refs``; the training lineage as a last resort)
  whose feature is marked sensitive;
- ``keys``: a join key of a sensitive entity, either one of the served model's
  ``entity_keys`` or a key of a view the model reads (on-demand views: their sources' views).
  Keys are tokenized in ``entity`` and in ``features`` (where entity keys may also be sent).

:class:`SensitiveGuard` keeps this off the hot path: the facts of a version (its references)
are read once (versions never change), the set of a route is computed once per route object
(the routing table swaps routes on change) from the cached feature definitions, which the
gateway re-reads periodically. A model without references and entity keys needs no
definitions at all, and a route with no sensitive input costs one dict lookup per request::

    guard = SensitiveGuard(services, {m.name: m for m in cfg.models})
    inst = await guard.protect(route, inst)     # tokens in place of raw sensitive values
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from raymlp.config import ServedModelConfig
from raymlp.errors import RayMLPError, UnavailableError, ValidationError
from raymlp.features.definitions import FeatureRegistry
from raymlp.features.tokenize import Tokenizer, is_token
from raymlp.serving.routing import ModelRoute, VersionInfo
from raymlp.storage import Storage

__all__ = [
    "NOTHING",
    "SensitiveGuard",
    "SensitiveInputs",
    "input_refs",
    "sensitive_inputs",
]

logger = logging.getLogger(__name__)

#: The artifact's spec file (``raymlp.predictor.artifact``; read here without importing the
#: predictor package, which pulls in torch).
_SPEC_FILE = "model.json"


@dataclass(frozen=True)
class SensitiveInputs:
    """The request fields of one served model whose values are tokenized.

    Attributes:
        features: model inputs (names in a request's ``features``) fed by sensitive features.
        keys: join keys of sensitive entities (in ``entity`` and in ``features``).
    """

    features: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.features or self.keys)

    def __or__(self, other: SensitiveInputs) -> SensitiveInputs:
        if not other:
            return self
        if not self:
            return other
        return SensitiveInputs(self.features | other.features, self.keys | other.keys)

    def protect(
        self,
        tokenizer: Tokenizer,
        features: Mapping[str, Any] | None,
        entity: Mapping[str, Any] | None,
        *,
        strict: bool = True,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """``(features, entity)`` with tokens in place of the raw sensitive values (tokens and
        nulls stay as they are; a mapping without sensitive fields is returned as it is).

        A sensitive value is a string (an integer is tokenized as its decimal string, as the
        feature store does). Anything else raises ValidationError naming the field (never
        echoing the value) — or, with ``strict=False`` (what a failed request logs), becomes
        None.
        """
        return (
            _tokenized(tokenizer, features, self.features | self.keys, "features", strict),
            _tokenized(tokenizer, entity, self.keys, "entity", strict),
        )


#: No sensitive input.
NOTHING = SensitiveInputs()


def _tokenized(
    tok: Tokenizer,
    values: Mapping[str, Any] | None,
    names: frozenset[str],
    where: str,
    strict: bool,
) -> Any:
    if not values or not names or names.isdisjoint(values):
        return values
    out = dict(values)
    for name in names.intersection(values):
        v = out[name]
        if v is None or is_token(v):
            continue
        if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)):
            out[name] = tok.token(v)
        elif strict:
            raise ValidationError(
                f"{where}.{name}: a sensitive value is a string, got {type(v).__name__} "
                "(rule: sensitive inputs are strings; they are tokenized at the gateway)",
                field=name,
                rule="sensitive string",
            )
        else:
            out[name] = None
    return out


def input_refs(refs: Iterable[str], inputs: Collection[str] | None) -> dict[str, str]:
    """``{model input: "view:feature"}`` of references given without input names (the serve
    config's ``features``, the lineage): a reference feeds the input of its short name when the
    model has one, else the ``view__feature`` input — as the model server maps them. Without
    the input names (no signature) both candidates are kept."""
    out: dict[str, str] = {}
    for ref in refs:
        view, _, short = ref.partition(":")
        full = f"{view}__{short}"
        if inputs is None:
            out.setdefault(short, ref)
            out.setdefault(full, ref)
        else:
            out[short if short in inputs else full] = ref
    return out


def sensitive_inputs(
    reg: FeatureRegistry, refs: Mapping[str, str], entity_keys: Iterable[str] = ()
) -> SensitiveInputs:
    """The sensitive inputs of a model reading ``refs`` (``{input: "view:feature"}``) and
    served with ``entity_keys``, under the definitions ``reg``. References to views that are
    not defined are not sensitive (nothing of theirs is stored)."""
    features: set[str] = set()
    views: set[str] = set()
    odvs = set(reg.names("on_demand_feature_view"))
    for inp, ref in refs.items():
        view, _, feat = ref.partition(":")
        if reg.has_view(view):
            views.add(view)
            if any(f.name == feat and f.sensitive for f in reg.view(view).features):
                features.add(inp)
        elif view in odvs:
            for src in reg.on_demand_view(view).sources:
                src_view = src.partition(":")[0]
                if reg.has_view(src_view):
                    views.add(src_view)
    keys: set[str] = set()
    for view in views:
        keys.update(reg.sensitive_keys(view))
    wanted = set(entity_keys)
    if wanted:
        for name in reg.names("entity"):
            ent = reg.entity(name)
            if ent.sensitive:
                keys.update(wanted.intersection(ent.join_keys))
    if not features and not keys:
        return NOTHING
    return SensitiveInputs(frozenset(features), frozenset(keys))


def _route_versions(route: ModelRoute) -> list[VersionInfo]:
    """Every version a request of ``route`` may reach (answer, chain step or shadow copy)."""
    return [v for v in (route.stable, route.canary, route.shadow, route.fallback) if v is not None]


class SensitiveGuard:
    """The gateway's view of sensitive inputs, per served model (see the module docstring).

    Args:
        services: the replica's platform services (``raymlp.serving._platform``): ``config``
            (the tokenization key, the artifact storage options), ``registry`` (a version's
            artifact) and ``features`` (the feature definitions, as the service principal).
        models: the served models' configs by name (``features``, ``entity_keys``).
    """

    def __init__(self, services: Any, models: Mapping[str, ServedModelConfig]) -> None:
        self._services = services
        self._models = dict(models)
        #: model id -> {input: "view:feature"} (a version's references never change)
        self._refs: dict[str, dict[str, str]] = {}
        #: model name -> (the route it was computed for, its sensitive inputs)
        self._routes: dict[str, tuple[ModelRoute, SensitiveInputs]] = {}
        #: model id -> sensitive inputs of a version on its own (pinned versions)
        self._versions: dict[str, SensitiveInputs] = {}
        self._reg: FeatureRegistry | None = None
        self._tokenizer: Tokenizer | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raymlp-sensitive")
        self.computed = 0

    # -- the hot path -------------------------------------------------------------------------

    def cached(self, route: ModelRoute) -> SensitiveInputs | None:
        """The route's sensitive inputs if already known (None: not computed yet)."""
        hit = self._routes.get(route.name)
        return hit[1] if hit is not None and hit[0] is route else None

    async def for_route(
        self, route: ModelRoute, pinned: VersionInfo | None = None
    ) -> SensitiveInputs:
        """The sensitive inputs of every version ``route`` (and a ``pinned`` version) may send
        a request to: their union, so whichever version answers, nothing raw reaches a model or
        a log. Raises UnavailableError when they cannot be known (definitions unreadable)."""
        hit = self._routes.get(route.name)
        if hit is not None and hit[0] is route:
            sens = hit[1]
        else:
            sens = await self._run(self._compute_route, route)
            if hit is not None and not _route_versions(route):
                # No version to learn from (not loaded yet, or gone): keep what the model's
                # last route said, so rule and default answers log no raw value either.
                sens = sens | hit[1]
            self._routes[route.name] = (route, sens)
        if pinned is not None and pinned.model_id not in {
            v.model_id for v in _route_versions(route)
        }:
            one = self._versions.get(pinned.model_id)
            if one is None:
                one = await self._run(self._compute, route.name, [pinned])
                self._versions[pinned.model_id] = one
            sens = sens | one
        return sens

    async def protect(self, route: ModelRoute, inst: Any, pinned: VersionInfo | None = None) -> Any:
        """``inst`` (a request ``Instance``) with its sensitive values tokenized; ``inst``
        itself when the model has no sensitive input or the request carries none."""
        sens = await self.for_route(route, pinned)
        if not sens:
            return inst
        tok = await self._run(self.tokenizer) if self._tokenizer is None else self._tokenizer
        features, entity = sens.protect(tok, inst.features, inst.entity)
        if features is inst.features and entity is inst.entity:
            return inst
        return inst.model_copy(update={"features": features, "entity": entity})

    def loggable(self, route: ModelRoute | None, features: Any) -> Any:
        """What a failed request of ``route`` may log of its ``features``: them as they are
        when the route has no sensitive input, tokens in place of sensitive values (None where
        a value cannot be tokenized), and nothing when the sensitive inputs are unknown."""
        if not features or route is None:
            return features
        sens = self.cached(route)
        if sens is None:
            return None
        if not sens:
            return features
        if self._tokenizer is None:  # the key could not be loaded: nothing is safe to log
            return None
        return sens.protect(self._tokenizer, features, None, strict=False)[0]

    async def prepare(self, vi: VersionInfo) -> None:
        """Read a version's references ahead of its traffic (the gateway's warm-up), so the
        first request of a new route computes its set from caches. Never raises: a request
        that finds them missing reads them itself."""
        try:
            await self._run(self._version_refs, vi)
        except Exception:  # noqa: BLE001 - the request path retries
            logger.warning("%s: sensitive inputs not prepared", vi.model_id, exc_info=True)

    # -- computing (a worker thread) ----------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def tokenizer(self) -> Tokenizer:
        """The platform's tokenizer (loaded once; UnavailableError when there is no key)."""
        if self._tokenizer is None:
            try:
                self._tokenizer = Tokenizer.from_config(self._services.config)
            except RayMLPError as e:
                raise UnavailableError(
                    f"sensitive inputs cannot be tokenized: {e.message}",
                    reason="no tokenization key",
                ) from None
        return self._tokenizer

    def _compute_route(self, route: ModelRoute) -> SensitiveInputs:
        return self._compute(route.name, _route_versions(route))

    def _compute(self, name: str, versions: list[VersionInfo]) -> SensitiveInputs:
        mcfg = self._models.get(name)
        entity_keys = list(mcfg.entity_keys) if mcfg is not None else []
        sens = NOTHING
        refs = [self._version_refs(vi) for vi in versions]
        if not entity_keys and not any(refs):
            return NOTHING  # nothing to look up: no definitions needed
        reg = self._definitions()
        for vrefs in refs or [{}]:
            sens = sens | sensitive_inputs(reg, vrefs, entity_keys)
        self.computed += 1
        return sens

    def _definitions(self) -> FeatureRegistry:
        if self._reg is None:
            try:
                self._reg = self._services.features.registry()
            except RayMLPError as e:
                raise UnavailableError(
                    "the feature definitions could not be read, so sensitive inputs cannot be "
                    f"told apart (rule: raw sensitive values never pass the gateway): {e.message}",
                    reason="feature definitions unavailable",
                ) from None
        return self._reg

    def _version_refs(self, vi: VersionInfo) -> dict[str, str]:
        """``{input: "view:feature"}`` of one version (cached by model id)."""
        refs = self._refs.get(vi.model_id)
        if refs is not None:
            return refs
        mcfg = self._models.get(vi.model)
        inputs = [s.name for s in vi.signature.inputs] if vi.signature is not None else None
        if mcfg is not None and mcfg.features:
            refs = input_refs(mcfg.features, inputs)  # the config's references win
        else:
            refs = self._artifact_refs(vi, inputs)
            if refs is None:
                return {}  # unreadable for now: not cached, tried again on the next route
        self._refs[vi.model_id] = refs
        return refs

    def _artifact_refs(self, vi: VersionInfo, inputs: list[str] | None) -> dict[str, str] | None:
        """The artifact's ``feature_refs``, else the lineage's feature views; None when neither
        can be read (such a version cannot be loaded by a model server either). Raises
        UnavailableError when the registry cannot be read: unknown inputs fail closed."""
        try:
            mv = self._services.registry.get(vi.model, version=vi.version)
        except RayMLPError as e:
            raise UnavailableError(
                f"version {vi.model_id} could not be read from the registry, so its sensitive "
                f"inputs are unknown: {e.message}",
                reason="registry unavailable",
            ) from None
        cfg = self._services.config
        try:
            spec = json.loads(Storage(mv.artifact_uri, cfg.storage.options).read_bytes(_SPEC_FILE))
        except (RayMLPError, ValueError) as e:
            logger.warning("%s: sensitive inputs: no readable %s: %s", vi.model_id, _SPEC_FILE, e)
            spec = None
        recorded = spec.get("feature_refs") if isinstance(spec, dict) else None
        if isinstance(recorded, dict):
            return {str(k): str(v) for k, v in recorded.items()}
        lineage_views = (mv.lineage or {}).get("feature_views") or []
        refs = [
            f"{v['name']}:{f}"
            for v in lineage_views
            if isinstance(v, dict) and v.get("name")
            for f in v.get("features") or []
        ]
        if spec is None and not refs:
            return None
        return input_refs(refs, inputs)

    # -- keeping up with the definitions ------------------------------------------------------

    async def refresh_definitions(self) -> bool:
        """Re-read the feature definitions (only when some model needed them); forget every
        computed set when they changed, so the next request computes its route's afresh.
        Returns whether they changed."""
        if self._reg is None:
            return False

        def read() -> FeatureRegistry:
            return self._services.features.registry()

        try:
            reg = await self._run(read)
        except Exception as e:  # noqa: BLE001 - keep the sets we have; try again next time
            logger.warning("sensitive inputs: the feature definitions could not be re-read: %s", e)
            return False
        if reg.serial == self._reg.serial:
            return False
        self._reg = reg
        self._routes.clear()
        self._versions.clear()
        return True

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)
