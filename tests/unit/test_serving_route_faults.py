"""The routing table under faults (issue 14 item 4): a registry that cannot answer or a model
server replica that cannot warm a version never takes traffic away from a canary, a shadow or a
fallback — only a registry decision (weight 0, version gone) does.

The registry here is a small in-memory stand-in for the registry *client* interface the table
reads (``get``, ``get_traffic``): the table's own logic is under test, not Ray or the actor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raymlp.config import ServeAppConfig
from raymlp.errors import NotFoundError, StorageError, UnavailableError
from raymlp.serving.route_updater import RoutingTable
from raymlp.serving.routing import VersionInfo


class Registry:
    """Versions 1..3 of ``churn`` (1 in production) and a traffic state; ``down`` makes
    every read raise the given error, as the client does while the actor restarts."""

    def __init__(self) -> None:
        self.traffic: dict[str, Any] = {"canary_version": 2, "canary_weight": 25.0}
        self.down: Exception | None = None
        self.versions_down = False  # only reads by version fail (the registry died mid-read)
        self.gone: set[int] = set()

    def get(self, name: str, version: int | None = None, alias: str | None = None) -> dict:
        if self.down is not None and (version is not None or not self.versions_down):
            raise self.down
        v = 1 if alias is not None else version or 1
        if v in self.gone:
            raise NotFoundError(f"version {v} of {name!r} does not exist", kind="version")
        return {"name": name, "version": v, "tenant": "default"}

    def get_traffic(self, name: str) -> dict[str, Any]:
        if self.down is not None and not self.versions_down:
            raise self.down
        return dict(self.traffic)


class Warmer:
    """The warm function: records calls; ``fail`` holds model ids whose warm-up raises."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[str] = set()

    async def __call__(self, pool: str, vi: VersionInfo) -> None:
        self.calls.append(vi.model_id)
        if vi.model_id in self.fail:
            raise UnavailableError(f"{vi.model_id}: the replica died")


def _table(reg: Registry, warm: Warmer) -> RoutingTable:
    cfg = ServeAppConfig.model_validate({"name": "svc", "models": [{"name": "churn"}]})
    return RoutingTable(cfg, reg, warm)


def _refresh(table: RoutingTable) -> Any:
    return asyncio.run(table.refresh("churn"))


@pytest.mark.parametrize("versions_only", [False, True])
@pytest.mark.parametrize(
    "fault", [UnavailableError("the registry is restarting"), StorageError("root unreadable")]
)
def test_a_registry_that_cannot_answer_keeps_the_whole_route(fault, versions_only):
    reg, warm = Registry(), Warmer()
    reg.versions_down = versions_only
    table = _table(reg, warm)
    before = _refresh(table)
    assert (before.stable.version, before.canary.version, before.canary_weight) == (1, 2, 25.0)
    table._versions.clear()  # a fresh replica: nothing cached, every read goes to the registry
    reg.down = fault
    with pytest.raises(type(fault)):
        _refresh(table)
    assert table.get("churn") is before  # untouched: canary, weight, fallback all kept
    reg.down = None
    after = _refresh(table)
    assert (after.canary.version, after.canary_weight) == (2, 25.0)


def test_a_serving_canary_that_fails_a_warm_up_keeps_its_traffic():
    reg, warm = Registry(), Warmer()
    table = _table(reg, warm)
    _refresh(table)
    table._warm.clear()  # e.g. the replica was replaced and the table warms again
    warm.fail.add("churn:2")
    route = _refresh(table)
    assert (route.canary.version, route.canary_weight) == (2, 25.0)
    assert any("warm-up of churn:2" in p for p in route.problems)


def test_a_new_canary_gets_traffic_only_once_warm_and_only_a_decision_removes_one():
    reg, warm = Registry(), Warmer()
    table = _table(reg, warm)
    _refresh(table)
    reg.traffic = {"canary_version": 3, "canary_weight": 10.0}
    warm.fail.add("churn:3")
    route = _refresh(table)
    assert route.canary is None and route.canary_weight == 0.0  # not warm: no traffic yet
    warm.fail.clear()
    assert _refresh(table).canary.version == 3
    reg.traffic = {"canary_version": 3, "canary_weight": 0.0}  # the decision: rolled back
    assert _refresh(table).canary is None
    reg.traffic = {"canary_version": 3, "canary_weight": 10.0}
    reg.gone.add(3)  # a version the registry no longer has is no canary either
    table._versions.clear()
    route = _refresh(table)
    assert route.canary is None and any("canary version 3" in p for p in route.problems)


def test_served_ids_name_every_version_with_traffic():
    reg, warm = Registry(), Warmer()
    reg.traffic = {"canary_version": 2, "canary_weight": 5.0, "standby_version": 3}
    table = _table(reg, warm)
    _refresh(table)
    assert table.served_ids() == ["churn:1", "churn:2", "churn:3"]
