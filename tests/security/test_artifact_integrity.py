"""Threat: artifacts trusted blindly. Whoever can write the storage root rewrites
``models/<name>/<version>/weights.pt`` and production changes at the next load.

Now the registry records a sha256 of every artifact file in the version's event at
registration; a model server verifies the files before loading, refuses a changed one, logs
it, records an ``artifact_tampered`` registry event, and the chain answers from the fallback
model. Auth on, two tenants; the serving principal is a keyless viewer (service token)."""

from __future__ import annotations

import shutil

import httpx
import pytest
from ray import serve

from raymlp._private import cluster as cluster_lib
from raymlp.client import connect
from raymlp.config import PlatformConfig, hash_api_key
from raymlp.errors import ArtifactIntegrityError
from raymlp.predictor.artifact import load_predictor, read_json
from raymlp.serving.examples import example_features, make_artifact
from raymlp.storage import Storage
from tests._net import free_port
from tests._wait import wait_for

KEYS = {"ops": "key-ops-7", "gina": "key-gina-7"}


@pytest.fixture
def secured(ray_cluster, tmp_path):
    cfg = PlatformConfig.model_validate(
        {
            "storage": {"root": str(tmp_path / "root")},
            "registry": {"approval_required": False},
            "auth": {
                "tenants": [{"name": "acme"}, {"name": "globex"}],
                "principals": [
                    {
                        "name": "ops",
                        "tenant": "acme",
                        "roles": ["developer"],
                        "api_key_sha256": hash_api_key(KEYS["ops"]),
                    },
                    {
                        "name": "gina",
                        "tenant": "globex",
                        "roles": ["developer"],
                        "api_key_sha256": hash_api_key(KEYS["gina"]),
                    },
                    {"name": "serving", "tenant": "acme", "roles": ["viewer"]},
                ],
            },
        }
    )
    p = connect(config=cfg, api_key=KEYS["ops"])
    yield p, cfg, tmp_path
    try:
        serve.shutdown()
    finally:
        cluster_lib.remove_platform(cfg.ray.namespace, cfg)


def _register(p, tmp_path):
    fb = make_artifact(tmp_path / "fb", seed=9, hidden_dims=())
    v1 = make_artifact(tmp_path / "v1", seed=1)
    sig = read_json(v1, "signature")
    reg = p.registry
    reg.register("churn-fallback", fb, signature=sig)
    lineage = {"fallback_model": {"name": "churn-fallback", "version": 1}}
    assert reg.register("churn", v1, signature=sig, lineage=lineage) == 1
    reg.promote("churn", 1, "production")
    return v1


def _recorded_digests(p, name="churn", version=1):
    events = p.registry.events(kinds=["version_registered"])
    (ev,) = [e for e in events if e["entity"] == f"model:{name}/{version}"]
    return ev["payload"]["digests"]


def test_a_rewritten_weights_file_is_refused_at_load_and_recorded(secured):
    p, cfg, tmp_path = secured
    v1 = _register(p, tmp_path)
    digests = _recorded_digests(p)
    assert set(digests) >= {"weights.pt", "model.json", "signature.json"}
    artifact_uri = p.registry.get("churn", version=1).artifact_uri
    assert load_predictor(artifact_uri, digests=digests)  # intact: loads

    # the attack: a valid torch file of another model replaces the weights under the root
    other = make_artifact(tmp_path / "evil", seed=666)
    target = Storage(cfg.storage.root).local_path("models", "churn", "1", "weights.pt")
    shutil.copyfile(other / "weights.pt", target)
    assert load_predictor(artifact_uri).predict_proba([example_features(1)]) != pytest.approx(
        load_predictor(v1).predict_proba([example_features(1)])
    )  # unverified, the rewrite would change production's answers

    with pytest.raises(ArtifactIntegrityError) as e:
        load_predictor(artifact_uri, digests=_recorded_digests(p))
    assert e.value.context["changed"] == ["weights.pt"]
    # nothing changed in the registry: the same digests, the same production version
    assert _recorded_digests(p) == digests
    assert p.registry.get("churn", alias="production").version == 1

    # served: the primary is refused, the fallback model answers, the refusal is an event
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = p.serve.deploy(
        {
            "name": "sec",
            "principal": "serving",
            "http": {"host": "127.0.0.1", "port": port},
            "models": [{"name": "churn"}],
            "gateway": {"num_replicas": 1, "num_cpus": 0},
            "model_server": {"num_replicas": 1, "num_cpus": 0},
            "fallback_server": {"num_replicas": 1, "num_cpus": 0},
            "timeouts": {"primary_s": 5, "fallback_s": 5, "warmup_s": 30},
        }
    )
    with httpx.Client(base_url=url, timeout=30) as http:
        answers = [
            http.post(
                "/v1/predictions",
                headers={"x-api-key": KEYS["ops"]},
                json={"model_id": "churn", "features": example_features(7 + i)},
            )
            for i in range(3)
        ]
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["route"] == "fallback" and "churn-fallback" in str(body["model_version"])

    def tampered():
        evs = p.registry.events(kinds=["artifact_tampered"])
        return evs[0] if evs else None

    ev = wait_for(tampered, timeout=30, interval=0.5, message="an artifact_tampered event")
    assert ev["payload"]["name"] == "churn" and ev["payload"]["version"] == 1
    assert ev["payload"]["changed"] == ["weights.pt"] and ev["principal"] == "serving"
    assert len(p.registry.events(kinds=["artifact_tampered"])) == 1  # reported once, not per call
    # another tenant sees nothing of it
    gina = p.as_principal(api_key=KEYS["gina"])
    assert gina.registry.events(kinds=["artifact_tampered"]) == []
    assert p.registry.get("churn", alias="production").version == 1
