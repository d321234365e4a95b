"""Warm predictor pools: long-lived actors that keep a model version loaded between batch runs.

A Ray Data actor pool (``map_batches(BatchPredictor, compute=ActorPoolStrategy(...))``) starts
its actors for one dataset and stops them after it: every run pays a process start, ``import
torch`` and the model load per actor (about 1 s each on 2 cores, as much as scoring 400k rows).
A :class:`PredictorPool` keeps ``size`` actors per model artifact alive in the driver that made
them, so the next run of the same version scores at once:

- the pool is keyed by the artifact, variant, device, CPUs/GPUs per actor, the registered
  digests and the allowed factory modules — a re-registered or rewritten artifact gets a new
  pool, and each actor verifies the digests when it loads, as serving does;
- a run computes its input (``ds.materialize()``), hands each block to the least busy actor
  (at most two calls in flight per actor) and gets one result block per input block; an actor
  that died is replaced and its block re-run once;
- CPU actors hold **no CPU while they idle** (``num_cpus=0``; one torch thread each): an actor
  that held its CPU would starve the next run's read and join tasks on a small cluster. They
  compute only while a run scores, which comes after its input is computed. GPU actors hold
  their GPU share.
- the actors belong to the driver: they end with it (a ``ray job submit`` job starts cold and
  is warm from its second run on), or with :func:`shutdown_pools`. At most
  ``MAX_POOLS`` models are kept; the least recently used pool beyond that is stopped.

Example::

    pool = predictor_pool(mv.artifact_uri, size=2)
    preds = pool.map_dataset(ds, {"refs": refs, "keep": ["customer_id"], "model_name": "churn",
                                  "model_version": 3, "run_id": "r1", "run_timestamp_us": 0})
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import ray

__all__ = ["PredictorPool", "predictor_pool", "shutdown_pools", "MAX_POOLS"]

#: Models whose warm pool one driver keeps (least recently used beyond this are stopped).
MAX_POOLS = 2
_IN_FLIGHT_PER_ACTOR = 2

_pools: OrderedDict[tuple, PredictorPool] = OrderedDict()
_lock = threading.Lock()


class _WarmPredictor:
    """One actor: the loaded predictor, and a :class:`BatchPredictor` per call."""

    def __init__(self, load: dict[str, Any]) -> None:
        import torch

        from raymlp.predictor.artifact import load_predictor

        torch.set_num_threads(max(1, int(load.pop("torch_threads", 1))))
        self._predictor = load_predictor(load.pop("artifact_uri"), **load)

    def run(self, block: Any, run: dict[str, Any]) -> Any:
        from ray.data.block import BlockAccessor

        from raymlp.inference.batch import BatchPredictor

        table = BlockAccessor.for_block(block).to_arrow()
        return BatchPredictor.from_loaded(self._predictor, **run)(table)

    def ready(self) -> bool:
        return True


_WarmPredictorActor = ray.remote(_WarmPredictor)


class PredictorPool:
    """``size`` warm actors for one model artifact (see the module docstring)."""

    def __init__(self, load: dict[str, Any], size: int, options: dict[str, Any]) -> None:
        self._load, self._options = dict(load), dict(options)
        self._actors: list[Any] = []
        self._job = ray.get_runtime_context().get_job_id()
        self.grow(size)

    @property
    def size(self) -> int:
        return len(self._actors)

    def alive_in_this_job(self) -> bool:
        return ray.is_initialized() and ray.get_runtime_context().get_job_id() == self._job

    def grow(self, size: int) -> None:
        """At least ``size`` actors, all loaded (a load error raises here, once)."""
        new = [self._start() for _ in range(max(0, size - len(self._actors)))]
        if new:
            try:
                ray.get([a.ready.remote() for a in new])
            except BaseException:
                for a in new:
                    ray.kill(a)
                raise
            self._actors += new

    def _start(self) -> Any:
        return _WarmPredictorActor.options(**self._options).remote(dict(self._load))

    def map_dataset(self, ds: Any, run: dict[str, Any], size: int | None = None) -> Any:
        """The blocks of ``ds`` scored by the pool (``size`` actors, default all): a dataset
        with one result block per input block (computed by the time this returns)."""
        actors = self._actors[: size or len(self._actors)]
        blocks = ds.materialize().to_arrow_refs()
        results = self._run_blocks(actors, blocks, run) if blocks else []
        if not results:
            import pyarrow as pa

            return ray.data.from_arrow(pa.table({"file": pa.array([], pa.string())}))
        return ray.data.from_arrow_refs(results)

    def _run_blocks(self, actors: list[Any], blocks: list[Any], run: dict[str, Any]) -> list:
        from ray.exceptions import RayActorError

        run_ref = ray.put(run)
        results: list[Any] = [None] * len(blocks)
        retried: set[int] = set()
        pending: dict[Any, tuple[int, int]] = {}  # result ref -> (block index, actor index)
        busy = [0] * len(actors)
        todo = list(range(len(blocks)))
        while todo or pending:
            while todo and min(busy) < _IN_FLIGHT_PER_ACTOR:
                a = busy.index(min(busy))
                i = todo.pop(0)
                pending[actors[a].run.remote(blocks[i], run_ref)] = (i, a)
                busy[a] += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            i, a = pending.pop(done[0])
            busy[a] -= 1
            try:
                ray.get(done[0])  # raises the scoring error, or that the actor died
            except RayActorError:
                if i in retried:
                    raise
                retried.add(i)
                actors[a] = self._replace(actors[a])
                todo.insert(0, i)
                continue
            results[i] = done[0]
        return results

    def _replace(self, dead: Any) -> Any:
        fresh = self._start()
        ray.get(fresh.ready.remote())
        self._actors = [fresh if a is dead else a for a in self._actors]
        return fresh

    def stop(self) -> None:
        for a in self._actors:
            try:
                ray.kill(a)
            except Exception:
                pass  # its cluster is gone already
        self._actors = []


def predictor_pool(
    artifact_uri: str,
    *,
    size: int,
    variant: str = "fp32",
    device: str = "cpu",
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    digests: dict[str, str] | None = None,
    factory_modules: list[str] | None = None,
) -> PredictorPool:
    """This driver's warm pool for the model (created, or grown to ``size`` actors)."""
    key = (
        artifact_uri,
        variant,
        device,
        float(num_cpus),
        float(num_gpus or 0),
        tuple(sorted((digests or {}).items())),
        tuple(factory_modules or ()),
    )
    load = {
        "artifact_uri": artifact_uri,
        "variant": variant,
        "device": device,
        "digests": digests,
        "factory_modules": factory_modules,
        "torch_threads": max(1, int(num_cpus)),
    }
    # CPU actors reserve nothing while idle (see the module docstring); GPU ones their share.
    options: dict[str, Any] = {"num_cpus": 0}
    if num_gpus:
        options["num_gpus"] = num_gpus
    with _lock:
        pool = _pools.get(key)
        if pool is not None and not pool.alive_in_this_job():
            _pools.pop(key)
            pool = None
        if pool is None:
            pool = PredictorPool(load, size, options)
            _pools[key] = pool
        else:
            pool.grow(size)
        _pools.move_to_end(key)
        while len(_pools) > MAX_POOLS:
            _, old = _pools.popitem(last=False)
            old.stop()
    return pool


def shutdown_pools() -> None:
    """Stop every warm pool of this driver."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.stop()
