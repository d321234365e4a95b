"""The loop every Ray Train worker runs: DeepSpeed over the worker's Ray Data shard, validation by
all-reduced score histograms, a checkpoint per epoch, and resume from the last checkpoint.

``train_loop_per_worker(config)`` is handed to ``TorchTrainer``; ``config`` is a plain dict
(see :func:`loop_config`). Ray Train has already created the process group (gloo on CPU, NCCL on
GPU), so ``deepspeed.initialize`` joins it. Each epoch:

1. stream ``get_dataset_shard("train")`` in chunks of about ``FETCH_ROWS`` rows (local
   shuffle), sliced into micro-batches in the worker, ``engine.backward`` + ``engine.step``;
2. validate on ``get_dataset_shard("validation")``: per-class histograms of the predicted
   probability, summed over workers with one all-reduce → AUC, log-loss, accuracy;
3. ``engine.save_checkpoint`` on every rank (ZeRO shards) plus, from rank 0, ``state.json`` (epoch,
   history) and ``model.pt`` (consolidated fp32 weights — gathered under ZeRO-3); every rank
   reports its directory and Ray Train merges them under the storage root.

After a worker dies, Ray Train restarts the group (``FailureConfig.max_failures``) and
``ray.train.get_checkpoint()`` returns the last checkpoint: the engine reloads its full state
(weights, optimizer moments, step) and training continues at the next epoch — each report says
which epoch this attempt ``start_epoch`` ed at and how many restarts (``attempt``) it has seen.

This module imports only torch, numpy, ray.train and (lazily) deepspeed, so the GPU benchmark
can run it on a machine without the rest of raymlp's dependencies. A ``data: {"synthetic": ...}``
config feeds device-resident random batches instead of Ray Data (to measure the loop itself).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raymlp.predictor.factory import build_model
from raymlp.training.classification_metrics import auc_from_histograms
from raymlp.training.ddp_engine import DDPEngine, choose_engine
from raymlp.training.ds_config import build_deepspeed_config, client_optimizer, resolve_bf16

__all__ = [
    "train_loop_per_worker",
    "loop_config",
    "build_engine",
    "engine_kind",
    "train_step",
    "STATE_FILE",
    "WEIGHTS_FILE",
]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
WEIGHTS_FILE = "model.pt"
DS_TAG = "ds"
_VAL_BINS = 2048
#: Rows one call to Ray Data's iterator fetches for training (split into micro-batches).
FETCH_ROWS = 8192


def loop_config(
    *,
    model_factory: str,
    model_kwargs: dict[str, Any],
    input_dim: int,
    optimizer: dict[str, Any],
    deepspeed: dict[str, Any],
    epochs: int,
    batch_size: int,
    shuffle_buffer_rows: int = 0,
    seed: int = 0,
    metric: str = "val_auc",
    data: str | dict[str, Any] = "datasets",
    checkpoint: str = "full",
) -> dict[str, Any]:
    """The dict ``train_loop_per_worker`` takes (plain data: it crosses to every worker).

    ``checkpoint``: ``full`` (DeepSpeed state + weights every epoch, resumable) or
    ``metrics_only`` (a tiny state file, for benchmarks).
    """
    return {
        "model": {"factory": model_factory, "kwargs": dict(model_kwargs)},
        "input_dim": int(input_dim),
        "optimizer": dict(optimizer),
        "deepspeed": dict(deepspeed),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "shuffle_buffer_rows": int(shuffle_buffer_rows),
        "seed": int(seed),
        "metric": metric,
        "data": data,
        "checkpoint": checkpoint,
    }


def build_engine(
    model: torch.nn.Module,
    optimizer: dict[str, Any],
    deepspeed_opts: dict[str, Any],
    *,
    micro_batch: int,
    world_size: int,
    device: torch.device,
) -> tuple[Any, bool, str]:
    """``deepspeed.initialize`` the model — or, where ``engine`` (``deepspeed_opts``) resolves
    to ``ddp``, wrap it in a :class:`~raymlp.training.ddp_engine.DDPEngine`; returns
    ``(engine, bf16, precision note)``.

    The process group must exist already (Ray Train or the caller creates it).
    """
    bf16, note = resolve_bf16(deepspeed_opts.get("bf16", "auto"), device)
    if engine_kind(model, deepspeed_opts) == "ddp":
        return DDPEngine(model, optimizer, deepspeed_opts, device=device, bf16=bf16), bf16, note
    import deepspeed

    ds_cfg = build_deepspeed_config(
        deepspeed_opts,
        optimizer,
        micro_batch=micro_batch,
        world_size=world_size,
        bf16=bf16,
        pin_memory=device.type == "cuda",
    )
    params = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=params,
        optimizer=client_optimizer(optimizer, params),
        config=ds_cfg,
        dist_init_required=False,
    )
    return engine, bf16, note


def engine_kind(model: torch.nn.Module, deepspeed_opts: dict[str, Any]) -> str:
    """``"ddp"`` or ``"deepspeed"``: the engine ``build_engine`` uses for ``model``."""
    return choose_engine(deepspeed_opts, sum(p.numel() for p in model.parameters()))


def train_step(engine: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimizer step on a micro-batch; returns the (detached) mean loss."""
    logits = engine(x).reshape(-1).float()
    loss = F.binary_cross_entropy_with_logits(logits, y.reshape(-1).float())
    engine.backward(loss)
    engine.step()
    return loss.detach()


def _all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t


def _validate(
    engine: Any, shard: Any, device: torch.device, dtype: torch.dtype
) -> dict[str, float]:
    """Validation metrics over every worker's shard (one all-reduce of score histograms)."""
    engine.eval()
    pos = torch.zeros(_VAL_BINS, dtype=torch.float64, device=device)
    neg = torch.zeros(_VAL_BINS, dtype=torch.float64, device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, rows
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=4096, dtypes=torch.float32, device=device):
            x, y = batch["x"].to(dtype), batch["y"].reshape(-1)
            logits = engine(x).reshape(-1).float()
            sums[0] += F.binary_cross_entropy_with_logits(logits, y, reduction="sum").double()
            p = torch.sigmoid(logits)
            sums[1] += ((p >= 0.5).float() == y).sum().double()
            sums[2] += y.numel()
            idx = torch.clamp((p * _VAL_BINS).long(), 0, _VAL_BINS - 1)
            is_pos = y > 0.5
            pos += torch.bincount(idx[is_pos], minlength=_VAL_BINS).double()
            neg += torch.bincount(idx[~is_pos], minlength=_VAL_BINS).double()
    stacked = _all_reduce(torch.cat([pos, neg, sums]))
    pos, neg, sums = stacked[:_VAL_BINS], stacked[_VAL_BINS : 2 * _VAL_BINS], stacked[-3:]
    engine.train()
    rows = float(sums[2].item())
    auc = auc_from_histograms(pos.cpu().numpy(), neg.cpu().numpy())
    return {
        "val_loss": float(sums[0].item() / rows) if rows else float("nan"),
        "val_accuracy": float(sums[1].item() / rows) if rows else float("nan"),
        # A single-class shard has no AUC; report chance so Tune's comparisons stay defined.
        "val_auc": 0.5 if np.isnan(auc) else auc,
        "val_rows": rows,
    }


def _consolidated_state_dict(engine: Any, zero_stage: int, rank: int) -> dict[str, torch.Tensor]:
    """Full fp32 weights on rank 0 (every rank must call this: ZeRO-3 gathers collectively)."""
    module = engine.module
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if rank == 0:
                return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
            return {}
    if rank != 0:
        return {}
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def _micro_batches(
    shard: Any, config: dict[str, Any], epoch: int, rank: int, device: torch.device
) -> Any:
    """The shard's rows in micro-batches of ``batch_size``, fetched from Ray Data in chunks of
    about ``FETCH_ROWS`` (a multiple of the micro-batch) and sliced in the worker.

    Ray Data's per-batch cost (collation, conversion to tensors, the iterator's bookkeeping,
    about 2 ms on 2 cores) dominates a small model's step when it is paid per micro-batch; per
    chunk it is paid once for many steps. The micro-batches hold the same rows in the same
    order as ``iter_torch_batches(batch_size=batch_size)`` would give (whole chunks split
    evenly; the epoch's last, partial micro-batch included)."""
    bs = int(config["batch_size"])
    chunk = bs * max(1, FETCH_ROWS // bs)
    buf = config["shuffle_buffer_rows"] or None
    for big in shard.iter_torch_batches(
        batch_size=chunk,
        dtypes=torch.float32,
        device=device,
        prefetch_batches=2,
        local_shuffle_buffer_size=buf,
        local_shuffle_seed=(config["seed"] * 1000 + epoch * 10 + rank) if buf else None,
    ):
        n = int(big["y"].shape[0])
        for i in range(0, n, bs):
            yield {k: v[i : i + bs] for k, v in big.items()}


def _synthetic_batches(
    spec: dict[str, Any], cfg: dict[str, Any], world: int, device: torch.device, dtype: torch.dtype
):
    """Device-resident random batches (benchmarks): the same tensors every step."""
    bs = cfg["batch_size"]
    steps = max(1, int(spec["rows_per_epoch"]) // (bs * world))
    g = torch.Generator(device="cpu").manual_seed(int(spec.get("seed", 0)))
    x = torch.randn(bs, cfg["input_dim"], generator=g).to(device=device, dtype=dtype)
    y = (torch.rand(bs, generator=g) < 0.5).float().to(device)

    def batches():
        for _ in range(steps):
            yield {"x": x, "y": y}

    return batches


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker function (see the module docstring)."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config["seed"])
    np.random.seed(config["seed"])

    model = build_model(config["model"]["factory"], config["input_dim"], config["model"]["kwargs"])
    kind = engine_kind(model, config["deepspeed"])
    zero_stage = int(config["deepspeed"].get("zero_stage", 2)) if kind == "deepspeed" else 0
    engine, bf16, precision = build_engine(
        model,
        config["optimizer"],
        config["deepspeed"],
        micro_batch=config["batch_size"],
        world_size=world,
        device=device,
    )
    dtype = torch.bfloat16 if bf16 else torch.float32

    start_epoch, attempt, history = 0, 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            with open(os.path.join(ckpt_dir, STATE_FILE)) as f:
                state = json.load(f)
            if os.path.isdir(os.path.join(ckpt_dir, DS_TAG)):
                engine.load_checkpoint(ckpt_dir, tag=DS_TAG)
        start_epoch = int(state["epoch"]) + 1
        attempt = int(state.get("attempt", 0)) + 1
        history = list(state.get("history", []))
        if rank == 0:
            log.info(
                "resumed from the checkpoint of epoch %d (attempt %d)", state["epoch"], attempt
            )

    synthetic = config["data"].get("synthetic") if isinstance(config["data"], dict) else None
    train_shard = val_shard = None
    if synthetic is None:
        train_shard = ray.train.get_dataset_shard("train")
        val_shard = ray.train.get_dataset_shard("validation")
    else:
        synthetic_batches = _synthetic_batches(synthetic, config, world, device, dtype)

    engine.train()
    for epoch in range(start_epoch, config["epochs"]):
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        rows = steps = 0
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if train_shard is not None:
            batches = _micro_batches(train_shard, config, epoch, rank, device)
        else:
            batches = synthetic_batches()
        for batch in batches:
            x, y = batch["x"].to(dtype), batch["y"]
            loss = train_step(engine, x, y)
            n = y.shape[0]
            loss_sum += loss.double() * n
            rows += n
            steps += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        totals = _all_reduce(
            torch.tensor([rows, float(loss_sum.item())], dtype=torch.float64, device=device)
        )
        slowest = _all_reduce(torch.tensor([elapsed], dtype=torch.float64, device=device), "max")
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(totals[1]) / max(float(totals[0]), 1.0),
            "samples_per_s": float(totals[0] / max(slowest[0].item(), 1e-9)),
            "worker_samples_per_s": rows / max(elapsed, 1e-9),
            "epoch_time_s": float(slowest[0].item()),
            "steps": steps,
            "rows": int(totals[0]),
            "start_epoch": start_epoch,
            "attempt": attempt,
            "world_size": world,
            "worker_pid": os.getpid(),  # rank 0's process (reported metrics are rank 0's)
            "zero_stage": zero_stage,
            "engine": kind,
            "precision": "bf16" if bf16 else "fp32",
            "precision_note": precision,
        }
        if val_shard is not None:
            metrics.update(_validate(engine, val_shard, device, dtype))
        history.append({k: metrics[k] for k in metrics if not isinstance(metrics[k], str)})
        _report(engine, metrics, history, epoch, attempt, config, zero_stage, rank)


def _report(
    engine: Any,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    epoch: int,
    attempt: int,
    config: dict[str, Any],
    zero_stage: int,
    rank: int,
) -> None:
    import ray.train

    state = {"epoch": epoch, "attempt": attempt, "metrics": metrics, "history": history}
    with tempfile.TemporaryDirectory(prefix="raymlp-ckpt-") as tmp:
        if config["checkpoint"] == "full":
            engine.save_checkpoint(tmp, tag=DS_TAG)  # collective: every rank writes its shard
            weights = _consolidated_state_dict(engine, zero_stage, rank)
            if rank == 0:
                torch.save(weights, os.path.join(tmp, WEIGHTS_FILE))
        if rank == 0:
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump(state, f)
        has_files = bool(os.listdir(tmp))
        ckpt = ray.train.Checkpoint.from_directory(tmp) if has_files else None
        ray.train.report(metrics, checkpoint=ckpt)
