"""The serving traffic state in the registry: validated, role-checked, one evented change,
rebuilt by replay."""

from __future__ import annotations

import pytest

from raymlp.config import PlatformConfig, hash_api_key
from raymlp.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from raymlp.registry.service import RegistryService
from raymlp.storage import Storage

SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "binary"}}
DEV = {"name": "dev", "api_key": "k1"}
VIEWER = {"name": "viewer", "api_key": "k2"}
OTHER = {"name": "other-dev", "api_key": "k3"}
AUTH = {
    "tenants": [{"name": "acme"}, {"name": "globex"}],
    "principals": [
        {
            "name": "dev",
            "tenant": "acme",
            "roles": ["developer"],
            "api_key_sha256": hash_api_key("k1"),
        },
        {"name": "viewer", "tenant": "acme", "roles": ["viewer"],
         "api_key_sha256": hash_api_key("k2")},
        {"name": "other-dev", "tenant": "globex", "roles": ["developer"],
         "api_key_sha256": hash_api_key("k3")},
    ],
}


def _svc(root) -> RegistryService:
    cfg = PlatformConfig.model_validate(
        {"storage": {"root": str(root)}, "auth": AUTH, "registry": {"approval_required": False}}
    )
    return RegistryService(cfg, Storage(str(root)))


@pytest.fixture
def svc(tmp_path):
    s = _svc(tmp_path)
    for _ in range(3):
        s.execute(DEV, "register", {"name": "churn", "staged_path": None, "signature": SIG})
    s.execute(DEV, "promote", {"name": "churn", "version": 1, "alias": "production"})
    return s


def traffic(svc, who=DEV):
    return svc.query(who, "get_traffic", {"name": "churn"})


def test_empty_then_set_keep_and_clear(svc):
    t = traffic(svc)
    assert (t["canary_version"], t["canary_weight"], t["shadow_version"], t["steps"]) == (
        None,
        0.0,
        None,
        [],
    )
    out = svc.execute(
        DEV,
        "set_traffic",
        {
            "name": "churn",
            "canary_version": 2,
            "canary_weight": 10,
            "steps": [10, 50, 100],
            "reason": "canary",
        },
    )
    assert out["canary_version"] == 2 and out["canary_weight"] == 10.0
    svc.execute(DEV, "set_traffic", {"name": "churn", "shadow_version": 3})
    t = traffic(svc)  # fields not given kept their value
    assert (t["canary_version"], t["canary_weight"], t["shadow_version"]) == (2, 10.0, 3)
    assert t["steps"] == [10.0, 50.0, 100.0] and t["updated_by"] == "dev"
    svc.execute(DEV, "set_traffic", {"name": "churn", "canary_version": None})
    t = traffic(svc)  # clearing the canary version also zeroes its weight
    assert (t["canary_version"], t["canary_weight"], t["shadow_version"]) == (None, 0.0, 3)


def test_one_event_with_before_and_after_and_no_event_for_a_no_op(svc):
    seq = svc.state.last_seq
    svc.execute(DEV, "set_traffic", {"name": "churn", "canary_version": 2, "canary_weight": 5})
    events = [e for e in svc.recent if e.seq > seq]
    assert [e.kind for e in events] == ["traffic_changed"]
    assert events[0].payload["before"]["canary_weight"] == 0.0
    assert events[0].payload["after"]["canary_weight"] == 5.0
    seq = svc.state.last_seq
    svc.execute(DEV, "set_traffic", {"name": "churn", "canary_weight": 5})
    assert svc.state.last_seq == seq


@pytest.mark.parametrize(
    "change,err,field",
    [
        ({"canary_version": 2, "canary_weight": 101}, ValidationError, "canary_weight"),
        ({"canary_version": 2, "canary_weight": -1}, ValidationError, "canary_weight"),
        ({"canary_version": 2, "canary_weight": True}, ValidationError, "canary_weight"),
        ({"canary_version": 2, "canary_weight": float("nan")}, ValidationError, "canary_weight"),
        ({"canary_weight": 10}, ValidationError, "canary_version"),
        ({"canary_version": 9}, NotFoundError, None),
        ({"shadow_version": 0}, ValidationError, "shadow_version"),
        ({"steps": [50, 25]}, ValidationError, "steps"),
        ({"steps": [0, 50]}, ValidationError, "steps"),
        ({"steps": "5,25"}, ValidationError, "steps"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(svc, change, err, field):
    before, seq = traffic(svc), svc.state.last_seq
    with pytest.raises(err) as e:
        svc.execute(DEV, "set_traffic", {"name": "churn", **change})
    if field is not None:
        assert e.value.context["field"] == field
    assert traffic(svc) == before and svc.state.last_seq == seq


def test_archived_versions_cannot_take_traffic_but_can_be_the_standby(svc):
    svc.execute(DEV, "set_stage", {"name": "churn", "version": 3, "stage": "archived"})
    with pytest.raises(ConflictError):
        svc.execute(DEV, "set_traffic", {"name": "churn", "canary_version": 3, "canary_weight": 5})
    svc.execute(DEV, "set_traffic", {"name": "churn", "standby_version": 3})
    assert traffic(svc)["standby_version"] == 3


def test_rbac_developer_or_above_and_tenant_isolation(svc):
    assert traffic(svc, VIEWER)["name"] == "churn"  # viewers may read it
    with pytest.raises(PermissionDeniedError):
        svc.execute(VIEWER, "set_traffic", {"name": "churn", "shadow_version": 2})
    with pytest.raises(PermissionDeniedError):
        svc.execute(OTHER, "set_traffic", {"name": "churn", "shadow_version": 2})
    with pytest.raises(PermissionDeniedError):
        traffic(svc, OTHER)


def test_replay_rebuilds_the_traffic_state(svc, tmp_path):
    svc.execute(
        DEV,
        "set_traffic",
        {
            "name": "churn",
            "canary_version": 2,
            "canary_weight": 25,
            "shadow_version": 3,
            "standby_version": 1,
            "steps": [25, 100],
            "reason": "r",
        },
    )
    expected = traffic(svc)
    again = _svc(tmp_path)
    assert traffic(again) == expected
    assert again.query(DEV, "get_traffic", {"name": "churn"})["reason"] == "r"


def test_monitor_alerts_join_the_event_stream_and_survive_replay(svc, tmp_path):
    out = svc.execute(DEV, "record_event", {"kind": "monitor_alert", "model": "churn",
                                            "payload": {"rule": "drift", "transition": "firing"}})
    assert out == {"name": "churn", "kind": "monitor_alert"}
    last = svc.recent[-1]
    assert last.kind == "monitor_alert"
    assert last.payload["rule"] == "drift"
    assert last.principal == "dev"
    # A fresh service replays the log: the event is durable and changes no other state.
    again = _svc(tmp_path)
    assert [e.kind for e in again.recent][-1] == "monitor_alert"
    assert traffic(again) == traffic(svc)


@pytest.mark.parametrize(
    ("who", "args", "error"),
    [
        (DEV, {"kind": "alias_moved", "model": "churn"}, ValidationError),
        (DEV, {"kind": "monitor_alert", "model": "churn", "payload": [1]}, ValidationError),
        (DEV, {"kind": "monitor_alert", "model": "nope"}, NotFoundError),
        (VIEWER, {"kind": "monitor_alert", "model": "churn"}, PermissionDeniedError),
    ],
)
def test_record_event_rejects_bad_input(svc, who, args, error):
    with pytest.raises(error):
        svc.execute(who, "record_event", args)
