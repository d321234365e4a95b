"""Threat: raw sensitive values reach a model or a log through the serving path (issue 13
item 9, gateway side).

A customer entity and a ``contract`` feature are marked ``sensitive: true``; the feature store
holds their tokens, and the served model was trained on those tokens (its preprocessor knows
the tokens, not the raw plans). Callers send raw values — in ``features`` (the sensitive
feature, and the entity key inside the features), in ``entity`` (online lookup), in a batch, to
a pinned version, while a shadow version gets copies, and in requests that fail — over live
HTTP (real Serve on loopback, auth on). Then the monitor's prediction log (the Delta table,
read directly, every file searched byte by byte) and the gateway's ``recent`` buffer hold no raw
value, only tokens; and every answer equals the answer to the same request sent with tokens,
which is what the model says for the stored tokens (training/serving consistency).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from ray import serve

from raymlp._private import cluster as cluster_lib
from raymlp.client import connect
from raymlp.config import FeatureRepo, PlatformConfig, hash_api_key
from raymlp.errors import UnavailableError, ValidationError
from raymlp.features.definitions import FeatureRegistry
from raymlp.features.tokenize import Tokenizer, is_token
from raymlp.predictor.artifact import load_predictor, save_artifact
from raymlp.predictor.factory import build_model
from raymlp.predictor.preprocessing import PreprocessorFitter
from raymlp.serving.examples import FEATURES, synthetic_table
from raymlp.serving.sensitive import NOTHING, SensitiveInputs, input_refs, sensitive_inputs
from tests._net import free_port
from tests._wait import wait_for
from tests.security._http_app import KEYS, PRINCIPALS, App, assert_error

MODEL = "churn-tok"
#: Raw plans (the sensitive feature) and customer ids (the sensitive entity's key): distinctive
#: strings, so a search of the logs cannot miss them or find them by chance.
PLANS = ["SECRET-PLAN-ALPHA", "SECRET-PLAN-BRAVO", "SECRET-PLAN-CHARLIE"]
CUSTOMERS = [f"CUST-SECRET-{i:04d}" for i in range(6)]
REFS = {
    "tenure_months": "cust:tenure_months",
    "monthly_charges": "cust:monthly_charges",
    "contract": "cust:contract",
    "support_calls": "cust:support_calls",
}
REPO = {
    "entities": [{"name": "customer", "join_keys": ["customer_id"], "sensitive": True}],
    "feature_views": [
        {
            "name": "cust",
            "entities": ["customer"],
            "schema": [
                {"name": "tenure_months", "dtype": "int64"},
                {"name": "monthly_charges", "dtype": "float64"},
                {"name": "contract", "dtype": "string", "sensitive": True},
                {"name": "support_calls", "dtype": "int64"},
            ],
        }
    ],
}


def _stored(i: int) -> dict[str, Any]:
    """Customer ``i``'s raw feature values (as pushed)."""
    return {
        "tenure_months": 3 + 7 * i,
        "monthly_charges": 30.5 + 11.25 * i,
        "contract": PLANS[i % 3],
        "support_calls": i % 5,
    }


def _token_artifact(out: Path, tok: Tokenizer, seed: int) -> Path:
    """A model "trained" on the offline store: its preprocessor was fitted on the tokens of the
    plans (what the store holds), so a token is a known category and a raw plan is not."""
    table = synthetic_table(256, seed=0)
    raw = [PLANS[i % 3] for i in range(table.num_rows)]
    table = table.set_column(
        table.schema.get_field_index("contract"), "contract", pa.array(tok.tokens(raw))
    )
    fitter = PreprocessorFitter([name for name, _ in FEATURES])
    fitter.update(table)
    pre = fitter.finish()
    import torch

    torch.manual_seed(seed)
    factory, kwargs = "raymlp.training.models:tabular_mlp", {"hidden_dims": [16]}
    net = build_model(factory, pre.output_dim, kwargs)
    return save_artifact(
        out,
        factory=factory,
        kwargs=kwargs,
        state_dict=net.state_dict(),
        preprocessor=pre,
        signature={
            "inputs": [{"name": n, "dtype": d, "nullable": True} for n, d in FEATURES],
            "output": {"name": "churn", "kind": "binary", "labels": ["stay", "churn"]},
        },
        spec_extra={"feature_refs": REFS, "kind": "example"},
    )


class TokApp(App):
    """The application, plus the tokenizer and the local predictors of its artifacts."""

    tok: Tokenizer
    artifacts: dict[int, Path]

    def local(self, version: int, features: dict[str, Any]) -> float:
        return float(load_predictor(self.artifacts[version]).predict_proba([features])[0])

    def recent(self) -> list[dict[str, Any]]:
        return self.p.serve.handle().recent_records.remote(10_000).result(timeout_s=30)


@pytest.fixture(scope="module")
def app(ray_cluster, tmp_path_factory) -> Iterator[TokApp]:
    tmp = tmp_path_factory.mktemp("sec-tokens")
    principals = [
        {"name": n, "tenant": t, "roles": r, "api_key_sha256": hash_api_key(KEYS[n])}
        for n, t, r in PRINCIPALS
    ]
    principals.append({"name": "serving", "tenant": "acme", "roles": ["admin"]})
    # the monitor's service principal: it must read the registry, or it drops every record
    principals.append({"name": "monitor", "tenant": "acme", "roles": ["admin"]})
    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp / "root")},
            "registry": {"approval_required": False},
            "auth": {
                "tenants": [{"name": "acme"}, {"name": "globex"}],
                "principals": principals,
                "default_principal": "ops",
            },
        }
    )
    p = connect(config=cfg, api_key=KEYS["ops"])
    tok = Tokenizer.from_config(cfg)  # the platform's key (derived from its secret)
    p.features.apply(REPO)
    p.features.push(
        "cust",
        [
            {"customer_id": c, "event_timestamp": datetime.now(UTC), **_stored(i)}
            for i, c in enumerate(CUSTOMERS)
        ],
    )
    artifacts = {v: _token_artifact(tmp / f"v{v}", tok, seed=v) for v in (1, 2)}
    sig = json.loads((artifacts[1] / "signature.json").read_text())
    for v in (1, 2):
        p.registry.register(MODEL, artifacts[v], signature=sig)
    p.registry.promote(MODEL, 1, "production")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = p.serve.deploy(
        {
            "name": "sec",
            "principal": "serving",
            "http": {"host": "127.0.0.1", "port": port},
            "models": [{"name": MODEL, "entity_keys": ["customer_id"]}],
            "gateway": {"num_replicas": 1, "num_cpus": 0},
            "model_server": {"num_replicas": 1, "num_cpus": 0, "max_models_per_replica": 4},
            "fallback_server": {"num_replicas": 1, "num_cpus": 0},
            "cache": {"enabled": False},  # every request reaches the model
            "timeouts": {"primary_s": 10, "fallback_s": 5, "warmup_s": 60},
        }
    )
    a = TokApp(p, url, cfg)
    a.tok, a.artifacts = tok, artifacts
    try:
        yield a
    finally:
        a.http.close()
        serve.shutdown()
        cluster_lib.remove_platform(cfg.ray.namespace, cfg)


def _tokens(app: TokApp, values: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: app.tok.token(v) if k in names else v for k, v in values.items()}


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return r.json()


def _no_raw(text: str, where: str) -> None:
    for raw in [*PLANS, *CUSTOMERS]:
        assert raw not in text, (raw, where)


def test_raw_sensitive_values_are_tokens_before_the_model_and_every_log(app):
    tok = app.tok
    rids: list[str] = []

    def predict(body: dict[str, Any]) -> dict[str, Any]:
        out = _ok(app.post("/v1/predictions", {"model_id": MODEL, **body}))
        _no_raw(json.dumps(out), "an answer")
        rids.append(out["request_id"])
        return out

    # -- features requests: the raw plan (and the raw key inside the features) are tokenized --
    for i in range(3):
        raw = {**_stored(i), "customer_id": CUSTOMERS[i]}
        sent_raw = predict({"features": raw})
        sent_tok = predict({"features": _tokens(app, raw, "contract", "customer_id")})
        assert sent_raw["probability"] == sent_tok["probability"]
        model_input = _tokens(app, _stored(i), "contract")  # what the store holds
        assert sent_raw["probability"] == pytest.approx(app.local(1, model_input), abs=1e-6)
        # ...and it matters: the raw plan is a category this model never saw
        assert app.local(1, _stored(i)) != pytest.approx(app.local(1, model_input), abs=1e-6)

    # -- entity requests: the raw key is looked up as its token, same answer as by token ------
    for i in range(3, 6):
        by_raw = predict({"entity": {"customer_id": CUSTOMERS[i]}})
        by_tok = predict({"entity": {"customer_id": tok.token(CUSTOMERS[i])}})
        assert by_raw["probability"] == by_tok["probability"]
        # the model saw the stored token of the plan: what a features request with it gets
        assert by_raw["probability"] == pytest.approx(
            app.local(1, _tokens(app, _stored(i), "contract")), abs=1e-6
        )

    # -- a batch mixing both, raw ---------------------------------------------------------------
    batch = _ok(
        app.post(
            "/v1/predictions:batch",
            {
                "model_id": MODEL,
                "instances": [
                    {"features": {**_stored(0), "customer_id": CUSTOMERS[0]}},
                    {"entity": {"customer_id": CUSTOMERS[4]}},
                ],
            },
        )
    )
    got = [p["probability"] for p in batch["predictions"]]
    assert got == pytest.approx(
        [app.local(1, _tokens(app, _stored(i), "contract")) for i in (0, 4)], abs=1e-6
    )
    rids += [p["request_id"] for p in batch["predictions"]]

    # -- a shadow version gets copies, and a pinned version is asked directly ------------------
    app.p.serve.shadow(MODEL, 2)
    try:
        for i in range(3):
            predict({"features": _stored(i)})
        pinned = predict({"features": _stored(1), "version": 2})
        assert pinned["model_version"] == "2"
        assert pinned["probability"] == pytest.approx(
            app.local(2, _tokens(app, _stored(1), "contract")), abs=1e-6
        )
        shadows = wait_for(
            lambda: [r for r in app.recent() if r["route"] == "shadow"],
            timeout=60,
            message="shadow records",
        )
    finally:
        app.p.serve.shadow(MODEL, None)
    assert all(is_token(r["features"]["contract"]) for r in shadows), shadows

    # -- failed requests log tokens (or nothing) too, and never echo the raw value -------------
    bad_type = app.post(
        "/v1/predictions",
        {"model_id": MODEL, "features": {**_stored(2), "tenure_months": "many"}},
    )
    assert_error(bad_type, 422, "validation_error")
    not_a_string = app.post(
        "/v1/predictions",
        {"model_id": MODEL, "features": {**_stored(2), "contract": [PLANS[2]]}},
    )
    err = assert_error(not_a_string, 422, "validation_error")
    assert err["details"]["field"] == "contract" and err["details"]["rule"] == "sensitive string"
    _no_raw(not_a_string.text, "the error answer")
    unknown = app.post(
        "/v1/predictions", {"model_id": MODEL, "entity": {"customer_id": "CUST-SECRET-9999"}}
    )
    assert_error(unknown, 404, "not_found")
    assert "CUST-SECRET-9999" not in unknown.text
    failed = [bad_type.json(), not_a_string.json(), unknown.json()]
    rids += [e["error"]["details"]["request_id"] for e in failed]

    # -- the gateway's recent buffer: tokens only ---------------------------------------------
    records = app.recent()  # a shadow record shares its request's id: a list, not a dict
    assert set(rids) <= {r["request_id"] for r in records}
    _no_raw(json.dumps(records, default=str), "the gateway's recent buffer")
    for rec in records:
        feats = rec["features"] or {}
        if feats.get("contract") is not None:
            assert is_token(feats["contract"]), rec
        assert "customer_id" not in feats  # keys are routing data, not model inputs
    by_id = {r["request_id"]: r for r in records if r["route"] != "shadow"}
    assert by_id[failed[0]["error"]["details"]["request_id"]]["features"]["contract"] == (
        tok.token(PLANS[2])
    )
    assert by_id[failed[1]["error"]["details"]["request_id"]]["features"]["contract"] is None

    # -- the monitor's prediction log, the Delta table read directly ---------------------------
    log_dir = Path(app.cfg.storage.root) / "monitoring" / "prediction_log"

    def logged() -> list[dict[str, Any]] | None:
        rows = DeltaTable(str(log_dir)).to_pyarrow_table().to_pylist()
        return rows if set(rids) <= {r["request_id"] for r in rows} else None

    rows = wait_for(logged, timeout=60, interval=0.2, message="the requests in the Delta log")
    assert any(r["route"] == "shadow" for r in rows)
    _no_raw(json.dumps(rows, default=str), "the prediction_log table")
    contracts = [json.loads(r["features"]).get("contract") for r in rows if r["features"]]
    assert {c for c in contracts if c is not None} == {tok.token(p) for p in PLANS}
    files = [f for f in log_dir.rglob("*") if f.is_file()]
    assert any(f.suffix == ".parquet" for f in files)
    for f in files:
        data = f.read_bytes()
        for raw in [*PLANS, *CUSTOMERS]:
            assert raw.encode() not in data, (raw, f)


def test_tokens_and_inputs_that_are_not_sensitive_reach_the_model_as_sent(app):
    """A caller that tokenized already (the SDK, a batch job) is not tokenized twice, and the
    inputs that are not sensitive are neither changed nor logged differently."""
    feats = _tokens(app, _stored(5), "contract")
    out = _ok(app.post("/v1/predictions", {"model_id": MODEL, "features": feats}))
    assert out["probability"] == pytest.approx(app.local(1, feats), abs=1e-6)
    rec = next(r for r in app.recent() if r["request_id"] == out["request_id"])
    assert rec["features"] == feats


# -- the pure parts (no cluster) ------------------------------------------------------------------


def _registry(repo: dict[str, Any]) -> FeatureRegistry:
    reg = FeatureRegistry()
    return reg.plan_apply(FeatureRepo.model_validate(repo), applied_by="t").registry


def test_sensitive_inputs_come_from_refs_entities_and_served_keys():
    repo = {
        **REPO,
        "entities": [
            *REPO["entities"],
            {"name": "card", "join_keys": ["card_number"], "sensitive": True},
            {"name": "store", "join_keys": ["store_id"]},
        ],
        "feature_views": [
            *REPO["feature_views"],
            {
                "name": "shop",
                "entities": ["store"],
                "schema": [{"name": "size", "dtype": "float64"}],
            },
        ],
    }
    reg = _registry(repo)
    sens = sensitive_inputs(reg, REFS, ["customer_id"])
    assert sens == SensitiveInputs(frozenset({"contract"}), frozenset({"customer_id"}))
    # a served key of a sensitive entity the model's views do not use is still a token
    assert sensitive_inputs(reg, {}, ["card_number"]).keys == {"card_number"}
    # non-sensitive views and keys, and views that do not exist, cost nothing
    assert sensitive_inputs(reg, {"size": "shop:size"}, ["store_id"]) is NOTHING
    assert sensitive_inputs(reg, {"x": "nowhere:x"}, []) is NOTHING
    assert not NOTHING and sens | NOTHING is sens


def test_refs_map_to_inputs_as_the_model_server_maps_them():
    assert input_refs(["cust:contract", "cust:x"], ["contract"]) == {
        "contract": "cust:contract",
        "cust__x": "cust:x",
    }
    assert input_refs(["cust:contract"], None) == {
        "contract": "cust:contract",
        "cust__contract": "cust:contract",
    }


def test_protect_tokenizes_raw_values_only_and_refuses_non_strings():
    tok = Tokenizer(b"k" * 32)
    sens = SensitiveInputs(frozenset({"contract"}), frozenset({"customer_id"}))
    t = tok.token("c1")
    feats, ent = sens.protect(
        tok, {"contract": "gold", "customer_id": 12, "x": 1.5}, {"customer_id": t}
    )
    assert feats == {"contract": tok.token("gold"), "customer_id": tok.token("12"), "x": 1.5}
    assert ent == {"customer_id": t}  # a token passes unchanged
    untouched = {"x": 1.0, "contract": None}
    assert sens.protect(tok, untouched, None)[0] == untouched
    with pytest.raises(ValidationError) as exc:
        sens.protect(tok, {"contract": ["gold"]}, None)
    assert (exc.value.context["field"], exc.value.context["rule"]) == (
        "contract",
        "sensitive string",
    )
    assert "gold" not in str(exc.value)
    assert sens.protect(tok, {"contract": ["gold"]}, None, strict=False)[0] == {"contract": None}


class _Services:
    """Replica services without a cluster: a registry with one artifact, feature definitions
    that count their reads (or fail), auth off (the key lives under the storage root)."""

    def __init__(self, tmp: Path, reg: FeatureRegistry | None, refs: dict[str, str]) -> None:
        self.config = PlatformConfig.model_validate({"storage": {"root": str(tmp / "root")}})
        art = tmp / "artifact"
        art.mkdir(exist_ok=True)
        (art / "model.json").write_text(json.dumps({"feature_refs": refs}))
        self.reg, self.reads, self.gets = reg, 0, 0
        services = self

        class _Registry:
            def get(self, name: str, version: int) -> Any:
                services.gets += 1
                return type("MV", (), {"artifact_uri": str(art), "lineage": {}})()

        class _Features:
            def registry(self) -> FeatureRegistry:
                services.reads += 1
                if services.reg is None:
                    raise UnavailableError("the feature store is down")
                return services.reg

        self.registry, self.features = _Registry(), _Features()


def _route(name: str, *versions: int) -> Any:
    from raymlp.serving.routing import ModelRoute, VersionInfo

    vis = [VersionInfo(name, v) for v in versions]
    return ModelRoute(name=name, stable=vis[0], shadow=vis[1] if len(vis) > 1 else None)


def _served(name: str, entity_keys: list[str] | None = None) -> Any:
    from raymlp.config import ServedModelConfig

    return ServedModelConfig(name=name, entity_keys=entity_keys or [])


def test_the_guard_computes_once_per_route_and_follows_the_definitions(tmp_path):
    import asyncio

    from raymlp.serving.schemas import Instance
    from raymlp.serving.sensitive import SensitiveGuard

    svc = _Services(tmp_path, _registry(REPO), REFS)
    guard = SensitiveGuard(svc, {MODEL: _served(MODEL, ["customer_id"])})
    route = _route(MODEL, 1, 2)
    raw = Instance(features={**_stored(0), "customer_id": CUSTOMERS[0]})

    async def scenario() -> None:
        out = await guard.protect(route, raw)
        tok = guard.tokenizer()
        assert out.features == _tokens_of(tok, raw.features, "contract", "customer_id")
        assert raw.features["contract"] == PLANS[0]  # the request itself is not changed
        for _ in range(5):
            await guard.protect(route, raw)
        assert (svc.gets, svc.reads, guard.computed) == (2, 1, 1)  # two versions, one set
        # a new route object (the routing table swaps routes on change) is computed again,
        # from the cached version facts and definitions
        await guard.protect(_route(MODEL, 1, 2), raw)
        assert (svc.gets, svc.reads, guard.computed) == (2, 1, 2)
        # changed definitions (contract no longer sensitive: a forced re-apply) are followed
        views = json.loads(json.dumps(REPO["feature_views"]))
        views[0]["schema"][2]["sensitive"] = False
        changed = svc.reg.plan_apply(  # type: ignore[union-attr]
            FeatureRepo.model_validate({**REPO, "feature_views": views}),
            applied_by="t",
            force=True,
        ).registry
        svc.reg = changed
        assert await guard.refresh_definitions()
        out = await guard.protect(route, raw)
        assert out.features["contract"] == PLANS[0]
        assert out.features["customer_id"] == tok.token(CUSTOMERS[0])
        assert not await guard.refresh_definitions()  # unchanged: nothing recomputed

    asyncio.run(scenario())
    guard.close()


def test_the_guard_costs_nothing_without_refs_or_keys_and_fails_closed(tmp_path):
    import asyncio

    from raymlp.serving.schemas import Instance
    from raymlp.serving.sensitive import SensitiveGuard

    svc = _Services(tmp_path, None, {})  # definitions unreadable; the artifact has no refs
    guard = SensitiveGuard(svc, {"plain": _served("plain"), MODEL: _served(MODEL, ["customer_id"])})
    inst = Instance(features=_stored(1))

    async def scenario() -> None:
        plain = _route("plain", 1)
        assert await guard.protect(plain, inst) is inst  # passed on untouched
        assert svc.reads == 0  # no definitions needed
        assert guard.loggable(plain, inst.features) == inst.features
        keyed = _route(MODEL, 1)
        with pytest.raises(UnavailableError) as err:
            await guard.protect(keyed, Instance(entity={"customer_id": CUSTOMERS[1]}))
        assert err.value.context["reason"] == "feature definitions unavailable"
        assert guard.loggable(keyed, inst.features) is None  # unknown: nothing is logged

    asyncio.run(scenario())
    guard.close()


def _tokens_of(tok: Tokenizer, values: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: tok.token(v) if k in names else v for k, v in values.items()}
