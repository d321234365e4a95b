"""Artifact integrity: digests recorded at registration (in the registry's event, not the
artifact directory), verified at load; model factories only from the allowed modules."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys

import pyarrow.fs as pafs
import pytest

from raymlp.config import RegistrySettings, ServeBreakerSettings
from raymlp.errors import ArtifactIntegrityError, StorageError, ValidationError
from raymlp.predictor.artifact import load_predictor
from raymlp.registry import artifacts
from raymlp.registry.commands import ModelCommands
from raymlp.registry.events import Event, EventKind
from raymlp.registry.rbac import Actor
from raymlp.registry.state import RegistryState
from raymlp.serving.breaker import BreakerBoard
from raymlp.serving.chain import CLIENT_ERRORS, Step, run_chain
from raymlp.serving.examples import example_features, make_artifact
from raymlp.storage import Storage

ALICE = Actor(name="alice", tenant="default", roles=("developer",))


def digests_of(path) -> dict[str, str]:
    return artifacts.tree_digests(pafs.LocalFileSystem(), str(path))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return make_artifact(tmp_path_factory.mktemp("a") / "model", seed=1)


@pytest.fixture
def copy(artifact, tmp_path):
    return shutil.copytree(artifact, tmp_path / "model")


def test_every_file_is_digested_with_sha256(artifact):
    d = digests_of(artifact)
    assert {"model.json", "weights.pt", "preprocessor.json", "signature.json"} <= set(d)
    assert all(v.startswith("sha256:") and len(v) == 7 + 64 for v in d.values())
    assert d == digests_of(artifact)  # deterministic


def test_an_intact_artifact_loads_with_its_digests(copy):
    pred = load_predictor(copy, digests=digests_of(copy))
    assert pred.predict_proba([example_features(1)]).shape == (1,)


@pytest.mark.parametrize(
    "tamper, kind",
    [
        (
            lambda d: (d / "weights.pt").write_bytes((d / "weights.pt").read_bytes() + b"\0"),
            "changed",
        ),
        (lambda d: (d / "preprocessor.json").unlink(), "missing"),
        (lambda d: (d / "evil.py").write_text("print('hi')"), "extra"),
    ],
)
def test_a_missing_extra_or_changed_file_is_refused(copy, tamper, kind):
    recorded = digests_of(copy)
    tamper(copy)
    with pytest.raises(ArtifactIntegrityError) as e:
        load_predictor(copy, digests=recorded)
    assert kind in e.value.context and e.value.context["rule"] == "registered digests"
    assert kind in e.value.message
    # a storage-side failure, not the caller's: the serving chain goes on to the fallback
    assert isinstance(e.value, StorageError) and not isinstance(e.value, CLIENT_ERRORS)
    assert e.value.http_status == 503


def test_the_chain_answers_from_the_fallback_when_the_primary_artifact_is_refused(copy):
    recorded = digests_of(copy)
    (copy / "weights.pt").write_bytes(b"rewritten")

    async def primary():
        load_predictor(copy, digests=recorded)
        return {"prediction": "x", "probability": 1.0}

    async def fallback():
        return {"prediction": "stay", "probability": 0.2}

    board = BreakerBoard(ServeBreakerSettings())
    steps = [
        Step("primary", "m:1", primary, 5.0, "1", 1),
        Step("fallback", "fb:1", fallback, 5.0, "fb:1", None),
    ]
    ans = asyncio.run(run_chain(steps, board, [], {}, None))
    assert (ans.route, ans.probability) == ("fallback", 0.2)
    assert ans.failures == [("primary", "artifact_integrity")]


def _with_factory(path, factory):
    spec = json.loads((path / "model.json").read_text())
    spec["factory"] = factory
    (path / "model.json").write_text(json.dumps(spec))


def test_a_factory_outside_the_allowed_modules_is_refused_before_import(copy):
    _with_factory(copy, "not_a_real_module_xyz:build")
    with pytest.raises(ArtifactIntegrityError) as e:
        load_predictor(copy)  # the default allow-list: raymlp and torch.nn
    assert e.value.context["rule"] == "model_factory_modules"
    assert "not_a_real_module_xyz:build" in e.value.message
    assert "not_a_real_module_xyz" not in sys.modules  # refused on the name, never imported
    _with_factory(copy, "os:system")
    with pytest.raises(ArtifactIntegrityError, match="'os:system'"):
        load_predictor(copy, factory_modules=["raymlp", "torch.nn"])


def test_allowed_modules_match_whole_module_names():
    allowed = ["raymlp", "torch.nn"]
    assert artifacts.factory_allowed("raymlp.training.models:tabular_mlp", allowed)
    assert artifacts.factory_allowed("torch.nn:Linear", allowed)
    assert not artifacts.factory_allowed("raymlp_evil.x:f", allowed)  # a prefix is not a module
    assert not artifacts.factory_allowed("torch:load", allowed)
    assert not artifacts.factory_allowed("", allowed)
    with pytest.raises(ValueError, match="not a module name"):
        RegistrySettings(model_factory_modules=["bad name"])


def _commands(tmp_path, **settings):
    storage = Storage(str(tmp_path / "root"))
    cmds = ModelCommands(
        RegistryState(),
        RegistrySettings(**settings),
        lambda n, v: storage.uri("models", n, str(v)),
        storage,
    )
    return cmds, storage


def test_register_records_the_digests_of_the_staged_files_in_its_event(tmp_path, artifact):
    cmds, storage = _commands(tmp_path)
    staged = artifacts.new_staging_path()
    storage.upload_dir(artifact, staged)
    plan = cmds.register(ALICE, "churn", staged)
    ev = next(e for e in plan.events if e.kind == EventKind.VERSION_REGISTERED)
    assert ev.payload["digests"] == digests_of(artifact)
    # the fold keeps them on the version; replay from the stored row gives the same
    cmds.state.apply_all(plan.events)
    assert cmds.state.models["churn"].versions[1].digests == digests_of(artifact)
    again = RegistryState()
    again.apply_all([Event.from_dict(json.loads(json.dumps(e.to_dict()))) for e in plan.events])
    assert again.models["churn"].versions[1].digests == digests_of(artifact)


def test_register_refuses_an_artifact_naming_a_factory_outside_the_allow_list(tmp_path, copy):
    _with_factory(copy, "mypkg.nets:wide")
    cmds, storage = _commands(tmp_path)
    staged = artifacts.new_staging_path()
    storage.upload_dir(copy, staged)
    with pytest.raises(ValidationError) as e:
        cmds.register(ALICE, "churn", staged)
    assert e.value.context["rule"] == "model_factory_modules"
    assert "mypkg.nets:wide" in e.value.message
    assert not cmds.state.models  # nothing registered
    ok, _ = _commands(tmp_path, model_factory_modules=["raymlp", "mypkg"])
    assert ok.register(ALICE, "churn", staged).result == 1


def test_versions_without_digests_load_unverified(copy):
    # registered before digests were recorded: digests None → no check (the server warns)
    assert load_predictor(copy, digests=None).predict_proba([example_features(2)]).shape == (1,)
