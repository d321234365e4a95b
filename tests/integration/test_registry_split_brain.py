"""Two registries on one storage root (a split brain: a stale twin of the actor on a partitioned
node). Their commits to the event log are fenced by Delta's optimistic concurrency: they never
both commit the same event seq, and each catches up on the other's events before it writes."""

from __future__ import annotations

import threading

import pytest
from deltalake import DeltaTable

from raymlp.errors import ConflictError
from raymlp.registry.service import RegistryService
from raymlp.storage import Storage

SIG = {"inputs": [{"name": "x", "dtype": "float64"}], "output": {"name": "y", "kind": "regression"}}
TWIN = {"name": "twin"}
ROUNDS = 8


def _log_seqs(storage: Storage) -> list[int]:
    """The seq column of the Delta table itself (duplicates included)."""
    t = DeltaTable(storage.uri("registry", "events")).to_pyarrow_table(columns=["seq"])
    return sorted(t["seq"].to_pylist())


def test_the_actor_and_a_stale_twin_racing_on_one_root_never_fork(
    platform, platform_config, tmp_path
):
    reg = platform.registry
    art = tmp_path / "art"
    art.mkdir()
    (art / "w").write_text("w")
    assert reg.register("churn", art, signature=SIG) == 1
    storage = Storage(platform_config.storage.root)
    twin = RegistryService(platform_config, storage)  # replays the actor's events
    assert twin.state.models["churn"].next_version == 2

    got: dict[str, list[int]] = {"actor": [], "twin": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def via_actor() -> None:
        barrier.wait()
        for _ in range(ROUNDS):
            got["actor"].append(reg.register("churn", art, signature=SIG))

    def via_twin() -> None:
        barrier.wait()
        for _ in range(ROUNDS):
            while True:
                try:
                    got["twin"].append(
                        twin.execute(
                            TWIN,
                            "register",
                            {"name": "churn", "staged_path": None, "signature": SIG},
                        )
                    )
                    break
                except ConflictError as e:  # lost three races in a row: try again
                    assert e.context["rule"] == "fenced_log_append"
                    continue

    def guarded(fn):
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (via_actor, via_twin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    versions = got["actor"] + got["twin"]
    assert sorted(versions) == list(range(2, 2 + 2 * ROUNDS)), got  # no version given twice
    seqs = _log_seqs(storage)
    assert seqs == list(range(1, len(seqs) + 1))  # no event seq twice, none missing
    assert len(seqs) == 1 + 1 + 2 * ROUNDS  # model_created + one version_registered each

    # The twin moves canary; the actor's precondition on the old holder then fails cleanly
    twin.execute(TWIN, "promote", {"name": "churn", "version": 2, "alias": "canary"})
    with pytest.raises(ConflictError) as e:
        reg.promote("churn", 3, "canary", expected_version=None)
    assert e.value.context.get("current") == 2
    # the actor caught up on everything: its view equals a fresh replay of the log
    fresh = RegistryService(platform_config, storage)
    assert reg.get("churn", alias="canary").version == 2
    assert [v.version for v in reg.versions("churn")] == sorted(
        fresh.state.models["churn"].versions
    )
    assert _log_seqs(storage) == list(range(1, fresh.state.last_seq + 1))
