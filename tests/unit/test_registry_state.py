"""The registry state machine and its event log, without Ray: every command goes through
plan → Delta commit → apply, and a replay of the log rebuilds exactly the same state."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raymlp.config import PlatformConfig
from raymlp.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from raymlp.registry.eventlog import EventLog
from raymlp.registry.service import RegistryService
from raymlp.storage import Storage

SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}
ALICE = {"name": "alice"}
BOB = {"name": "bob"}


def _svc(root, **registry) -> RegistryService:
    cfg = PlatformConfig.model_validate({"storage": {"root": str(root)}, "registry": registry})
    return RegistryService(cfg, Storage(str(root)))


def _register(svc, name="churn", **kw):
    return svc.execute(
        ALICE, "register", {"name": name, "staged_path": None, "signature": SIG, **kw}
    )


def _snapshot(svc: RegistryService) -> dict:
    q = svc.query
    out = {
        "models": q(ALICE, "list_models", {}),
        "requests": q(ALICE, "requests", {"status": None}),
    }
    for m in out["models"]:
        out[m["name"]] = q(ALICE, "show_model", {"name": m["name"]})
    for e in q(ALICE, "list_experiments", {}):
        out[e["name"]] = [
            q(ALICE, "get_run", {"run_id": r["run_id"]})
            for r in q(ALICE, "search_runs", {"experiment": e["name"]})
        ]
    out["seq"] = svc.state.last_seq
    return out


def test_versions_increase_and_replay_rebuilds_everything(tmp_path):
    svc = _svc(tmp_path)
    run = svc.execute(ALICE, "start_run", {"experiment": "e", "params": {"lr": 0.1}})
    svc.execute(ALICE, "log_metrics", {"run_id": run, "metrics": {"auc": 0.7}, "step": 0})
    svc.execute(ALICE, "log_metrics", {"run_id": run, "metrics": {"auc": 0.8}})
    svc.execute(ALICE, "end_run", {"run_id": run})
    assert [_register(svc, run_id=run) for _ in range(3)] == [1, 2, 3]
    svc.execute(ALICE, "set_stage", {"name": "churn", "version": 1, "stage": "staging"})
    svc.execute(ALICE, "promote", {"name": "churn", "version": 2, "alias": "canary"})
    rid = svc.execute(ALICE, "request_promotion", {"name": "churn", "version": 3})
    svc.execute(BOB, "approve", {"request_id": rid})
    assert svc.query(ALICE, "get_run", {"run_id": run})["history"]["auc"][1][0] == 1
    replayed = _svc(tmp_path)
    assert _snapshot(replayed) == _snapshot(svc)
    assert replayed.state.request_counter == 1
    # numbers are never reused, also after a replay
    assert _register(replayed) == 4


def test_rollback_never_lands_an_alias_on_an_archived_version(tmp_path):
    svc = _svc(tmp_path)
    _register(svc), _register(svc)
    svc.execute(ALICE, "promote", {"name": "churn", "version": 1, "alias": "canary"})
    svc.execute(ALICE, "promote", {"name": "churn", "version": 2, "alias": "canary"})
    svc.execute(ALICE, "set_stage", {"name": "churn", "version": 1, "stage": "archived"})
    with pytest.raises(ConflictError) as e:
        svc.execute(ALICE, "rollback", {"name": "churn", "alias": "canary"})
    assert e.value.version == 1
    svc.execute(ALICE, "set_stage", {"name": "churn", "version": 1, "stage": "staging"})
    assert svc.execute(ALICE, "rollback", {"name": "churn", "alias": "canary"})["version"] == 1


def test_a_retried_op_id_acts_once(tmp_path):
    svc = _svc(tmp_path)
    args = {"name": "churn", "staged_path": None, "signature": SIG}
    assert svc.execute(ALICE, "register", args, op_id="op-1") == 1
    assert svc.execute(ALICE, "register", args, op_id="op-1") == 1
    assert _svc(tmp_path).execute(ALICE, "register", args, op_id="op-1") == 1  # after restart
    assert svc.execute(ALICE, "register", args, op_id="op-2") == 2


def test_rejected_commands_write_nothing(tmp_path):
    svc = _svc(tmp_path)
    _register(svc)
    seq = svc.state.last_seq
    bad = [
        ("register", {"name": "churn", "staged_path": None, "signature": {"inputs": []}}),
        ("register", {"name": "churn", "staged_path": "/etc", "signature": SIG}),
        ("set_stage", {"name": "churn", "version": 1, "stage": "gold"}),
        ("set_stage", {"name": "churn", "version": 9, "stage": "staging"}),
        ("promote", {"name": "churn", "version": 1}),  # needs approval
        ("promote", {"name": "ghost", "version": 1, "alias": "canary"}),
        ("rollback", {"name": "churn"}),
        ("approve", {"request_id": "pr-1"}),
        ("log_metrics", {"run_id": "nope", "metrics": {"a": 1}}),
        ("start_run", {"experiment": "Bad Name"}),
    ]
    for op, kwargs in bad:
        with pytest.raises((ValidationError, NotFoundError, ConflictError, PermissionDeniedError)):
            svc.execute(ALICE, op, kwargs)
    assert svc.state.last_seq == seq
    assert len(EventLog(svc.storage).read_all()) == seq
    with pytest.raises(ValidationError):
        svc.execute(ALICE, "drop_everything", {})
    with pytest.raises(ValidationError):
        svc.execute(ALICE, "register", {"name": "churn", "bogus": 1})


def test_run_rules(tmp_path):
    svc = _svc(tmp_path)
    run = svc.execute(
        ALICE, "start_run", {"experiment": "e", "params": {"lr": 0.1, "opt": {"a": 1}}}
    )
    child = svc.execute(ALICE, "start_run", {"experiment": "e", "parent_run_id": run})
    assert svc.query(ALICE, "get_run", {"run_id": run})["children"] == [child]
    assert svc.query(ALICE, "get_run", {"run_id": run})["params"]["opt"] == '{"a": 1}'
    svc.execute(ALICE, "log_params", {"run_id": run, "params": {"lr": 0.1, "bs": 32}})
    with pytest.raises(ConflictError) as e:
        svc.execute(ALICE, "log_params", {"run_id": run, "params": {"lr": 0.2}})
    assert e.value.field == "params.lr"
    with pytest.raises(ValidationError) as e:
        svc.execute(ALICE, "log_metrics", {"run_id": run, "metrics": {"auc": "high"}})
    assert e.value.field == "metrics.auc"
    with pytest.raises(ValidationError):
        svc.execute(ALICE, "log_metrics", {"run_id": run, "metrics": {"auc": 1}, "step": -1})
    with pytest.raises(ValidationError):
        svc.execute(ALICE, "end_run", {"run_id": run, "status": "RUNNING"})
    svc.execute(ALICE, "end_run", {"run_id": run, "status": "FAILED"})
    with pytest.raises(ConflictError):
        svc.execute(ALICE, "log_metrics", {"run_id": run, "metrics": {"auc": 1}})
    with pytest.raises(ConflictError):
        svc.execute(ALICE, "end_run", {"run_id": run})
    with pytest.raises(ConflictError):
        svc.execute(ALICE, "create_experiment", {"name": "e"})
    assert svc.execute(ALICE, "create_experiment", {"name": "e", "exist_ok": True}) == "e"
    assert svc.query(ALICE, "get_run", {"run_id": run})["status"] == "FAILED"


def test_a_second_writer_is_caught_up_not_overwritten(tmp_path):
    a = _svc(tmp_path)
    _register(a)
    b = _svc(tmp_path)  # e.g. a stale twin of the actor on a partitioned node
    assert _register(b) == 2
    # a's next commit finds the log moved: it catches up, re-plans, and takes version 3
    assert _register(a) == 3
    assert [e.seq for e in EventLog(a.storage).read_all()] == list(range(1, a.state.last_seq + 1))
    assert _snapshot(_svc(tmp_path)) == _snapshot(a)


def test_compaction_keeps_replay_identical_and_small(tmp_path):
    svc = _svc(tmp_path, compact_every=10)
    run = svc.execute(ALICE, "start_run", {"experiment": "e"})
    for i in range(25):
        svc.execute(ALICE, "log_metrics", {"run_id": run, "metrics": {"loss": 1 / (i + 1)}})
    files = [f for f in (tmp_path / "registry" / "events").iterdir() if f.suffix == ".parquet"]
    assert svc.log.commits_since_compact < 10
    replayed = _svc(tmp_path)
    assert _snapshot(replayed) == _snapshot(svc)
    dt_files = replayed.log._open().file_uris()
    assert len(dt_files) < 10 < len(files)  # live files were compacted
    assert (tmp_path / "registry" / "events" / "_delta_log" / "_last_checkpoint").exists()


def test_events_after_and_resync(tmp_path):
    svc = _svc(tmp_path, event_buffer=10)
    for _ in range(4):
        _register(svc)  # 5 events: model_created + 4 versions
    res = svc.events_after(ALICE, 3)
    assert [e["seq"] for e in res["events"]] == [4, 5] and not res["resync"]
    assert svc.events_after(ALICE, 5) == {"events": [], "last_seq": 5, "resync": False}
    assert svc.events_after(ALICE, 99)["resync"]  # ahead of the log: a different root
    for _ in range(10):
        _register(svc)
    assert svc.events_after(ALICE, 2)["resync"]  # fell out of the buffer
    page = svc.events_after(ALICE, 10, limit=2)
    assert [e["seq"] for e in page["events"]] == [11, 12] and page["last_seq"] == 12
    only = svc.events_after(ALICE, 10, kinds=["alias_moved"])
    assert only["events"] == [] and only["last_seq"] == 15


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.sampled_from(["a", "b"])),
        st.tuples(
            st.just("stage"),
            st.integers(1, 4),
            st.sampled_from(["none", "staging", "archived", "production"]),
        ),
        st.tuples(st.just("alias"), st.integers(1, 4), st.sampled_from(["canary", "champion"])),
        st.tuples(st.just("request"), st.integers(1, 4)),
        st.tuples(st.just("approve"), st.integers(1, 4)),
        st.tuples(st.just("rollback"), st.sampled_from(["production", "canary"])),
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_any_command_sequence_replays_to_the_same_state(tmp_path_factory, ops):
    root = tmp_path_factory.mktemp("reg")
    svc = _svc(root)
    for op in ops:
        try:
            if op[0] == "register":
                _register(svc, op[1])
            elif op[0] == "stage":
                svc.execute(ALICE, "set_stage", {"name": "a", "version": op[1], "stage": op[2]})
            elif op[0] == "alias":
                svc.execute(ALICE, "promote", {"name": "a", "version": op[1], "alias": op[2]})
            elif op[0] == "request":
                svc.execute(ALICE, "request_promotion", {"name": "a", "version": op[1]})
            elif op[0] == "approve":
                svc.execute(BOB, "approve", {"request_id": f"pr-{op[1]}"})
            else:
                svc.execute(ALICE, "rollback", {"name": "a", "alias": op[1]})
        except (ValidationError, NotFoundError, ConflictError, PermissionDeniedError):
            pass
        # invariants: production alias holder <=> the only version in stage production
        model = svc.state.models.get("a")
        if model is not None:
            prod = [v for v, r in model.versions.items() if r.stage == "production"]
            holder = model.aliases.get("production")
            assert prod == ([holder] if holder else [])
            for alias, v in model.aliases.items():
                assert model.versions[v].stage != "archived", (alias, v)
    assert _snapshot(_svc(root)) == _snapshot(svc)
