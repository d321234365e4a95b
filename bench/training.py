"""Training throughput: the platform's DeepSpeed loop under Ray Train vs a plain PyTorch loop.

CPU (default)::

    python -m bench.training [--quick]

samples/s of the platform's loop (``raymlp.training.loop``) fed by Ray Data shards with 1 and
with 2 Ray Train workers under ``engine: auto`` (the default; plain DDP for this small MLP;
scaling efficiency = 2-worker / (2 x 1-worker)), of the same loop on the DeepSpeed ZeRO-2 engine
with 2 workers (``deepspeed_ratio``), and of a plain single-process PyTorch loop (AdamW,
in-memory tensors, all cores) on the same MLP and data — the anchor. ``ours`` is the 2-worker
``auto`` figure, ``ratio`` = ours / anchor.

GPU (one CUDA device; imports only torch, ray, ray.train, deepspeed, numpy and pydantic)::

    python -m bench.training --gpu [--quick]

A ~142.6M-parameter MLP (2048 → 9 x 4096 → 1), batch 16,384, bf16: the bf16 matmul ceiling,
a plain PyTorch loop (autocast bf16, fused AdamW), the same model in a standalone DeepSpeed
ZeRO-2 loop without Ray (the anchor), and the platform's loop in a Ray Train ``TorchTrainer``
with one GPU worker (ours). Model-FLOPs utilisation = 6 x params x samples/s over the ceiling.
Each phase reports its own error in the JSON instead of ending the run. The last line is one
JSON object (``bench._common.emit``).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import time
import traceback
from typing import Any

from bench._common import emit, parser

# --- shared --------------------------------------------------------------------------------


def _ray_train_run(
    loop_cfg: dict[str, Any],
    *,
    num_workers: int,
    cpus_per_worker: float,
    use_gpu: bool,
    datasets: dict[str, Any] | None,
    storage: str,
    name: str,
) -> dict[str, Any]:
    """One TorchTrainer run of the platform's loop; per-epoch figures from its last state."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raymlp.training.loop import STATE_FILE, train_loop_per_worker

    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(name=name, storage_path=storage),
        datasets=datasets,
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d, open(os.path.join(d, STATE_FILE)) as f:
        history = json.load(f)["history"]
    steady = history[1:] or history  # the first epoch warms up (allocator, caches)
    return {
        "samples_per_s": statistics.median(h["samples_per_s"] for h in steady),
        "per_worker_samples_per_s": statistics.median(h["worker_samples_per_s"] for h in steady),
        "epoch_time_s": statistics.median(h["epoch_time_s"] for h in steady),
        "epochs": len(history),
        "wall_s_including_startup": round(wall, 1),
        "precision": result.metrics.get("precision"),
    }


# --- CPU -------------------------------------------------------------------------------------

_D, _HIDDEN = 32, [64, 32]


def _xy(ids, d: int = _D):
    """Deterministic synthetic rows from their ids: a linear signal plus noise."""
    import numpy as np

    rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
    x = rng.normal(size=(len(ids), d)).astype(np.float32)
    w = np.linspace(-1, 1, d, dtype=np.float32)
    y = ((x @ w + rng.normal(scale=2.0, size=len(ids))) > 0).astype(np.float32)
    return x, y


def _to_xy(batch: dict[str, Any]) -> dict[str, Any]:
    x, y = _xy(batch["id"])
    return {"x": x, "y": y}


def _plain_torch(x, y, *, batch: int, epochs: int) -> dict[str, Any]:
    """The anchor: one process, in-memory tensors, torch AdamW, all cores."""
    import torch
    import torch.nn.functional as F

    from raymlp.training.models import tabular_mlp

    torch.manual_seed(0)
    model = tabular_mlp(_D, _HIDDEN)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    rates = []
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        t0 = time.perf_counter()
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            loss = F.binary_cross_entropy_with_logits(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rates.append(len(xt) / (time.perf_counter() - t0))
    return {
        "samples_per_s": statistics.median(rates[1:] or rates),
        "threads": torch.get_num_threads(),
    }


def run_cpu(quick: bool) -> dict[str, Any]:
    import numpy as np
    import ray

    from raymlp.training.loop import loop_config

    rows = 60_000 if quick else 240_000
    epochs = 3 if quick else 4
    batch = 256
    cpus = os.cpu_count() or 2
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
    out: dict[str, Any] = {
        "bench": "training",
        "unit": "samples/s",
        "rows": rows,
        "batch_per_worker": batch,
        "model": f"MLP {_D}->{_HIDDEN}->1",
        "cpus": cpus,
        "errors": {},
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
    }
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        train = ray.data.range(rows, override_num_blocks=16).map_batches(_to_xy).materialize()
        val = ray.data.range(2048).map_batches(_to_xy).materialize()
        x, y = _xy(np.arange(rows))
        def cfg_for(engine: str) -> dict[str, Any]:
            return loop_config(
                model_factory="raymlp.training.models:tabular_mlp",
                model_kwargs={"hidden_dims": _HIDDEN},
                input_dim=_D,
                optimizer={"name": "adamw", "lr": 1e-3},
                deepspeed={
                    "engine": engine,
                    "zero_stage": 2,
                    "bf16": "auto",
                    "gradient_clipping": 1.0,
                },
                epochs=epochs,
                batch_size=batch,
                checkpoint="metrics_only",
            )

        storage = tempfile.mkdtemp(prefix="raymlp-bench-train-")
        # engine auto (the default: DDP for this small MLP) with 1 and 2 workers, then the
        # DeepSpeed ZeRO-2 engine with 2 workers for comparison.
        for key, n, engine in (
            ("workers_1", 1, "auto"),
            ("workers_2", 2, "auto"),
            ("deepspeed_workers_2", 2, "deepspeed"),
        ):
            print(f"== loop, engine {engine}, {n} Ray Train worker(s) ...", flush=True)
            try:
                out[key] = _ray_train_run(
                    cfg_for(engine),
                    num_workers=n,
                    cpus_per_worker=cpus / n,
                    use_gpu=False,
                    datasets={"train": train, "validation": val},
                    storage=storage,
                    name=f"bench-{key}",
                )
                print(f"   {out[key]['samples_per_s']:,.0f} samples/s", flush=True)
            except Exception as e:  # report and go on with the other phases
                out["errors"][key] = f"{type(e).__name__}: {e}"
        print("== plain PyTorch loop (anchor) ...", flush=True)
        try:
            out["plain_torch"] = _plain_torch(x, y, batch=batch, epochs=epochs)
            print(f"   {out['plain_torch']['samples_per_s']:,.0f} samples/s", flush=True)
        except Exception as e:
            out["errors"]["plain_torch"] = f"{type(e).__name__}: {e}"
    finally:
        ray.shutdown()
    one = out.get("workers_1", {}).get("samples_per_s")
    two = out.get("workers_2", {}).get("samples_per_s")
    anchor = out.get("plain_torch", {}).get("samples_per_s")
    out["ours"] = two
    out["anchor"] = anchor
    out["ratio"] = two / anchor if two and anchor else None
    out["scaling_efficiency"] = two / (2 * one) if one and two else None
    ds2 = out.get("deepspeed_workers_2", {}).get("samples_per_s")
    out["deepspeed_ratio"] = ds2 / anchor if ds2 and anchor else None
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    out["per_worker"] = {
        "1": out.get("workers_1", {}).get("per_worker_samples_per_s"),
        "2": out.get("workers_2", {}).get("per_worker_samples_per_s"),
    }
    return out


# --- GPU -------------------------------------------------------------------------------------

_GPU_INPUT, _GPU_HIDDEN, _GPU_BATCH = 2048, [4096] * 9, 16_384


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed_steps(step, n: int) -> float:
    import torch

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def _phase(out: dict[str, Any], name: str, fn) -> Any:
    print(f"== {name} ...", flush=True)
    t0 = time.perf_counter()
    try:
        res = fn()
        print(
            f"   {json.dumps(res, default=str)[:300]} ({time.perf_counter() - t0:.0f}s)", flush=True
        )
        return res
    except Exception as e:
        out["errors"][name] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
        return None
    finally:
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:
            pass


def run_gpu(quick: bool) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {
        "bench": "training_gpu",
        "unit": "samples/s",
        "batch": _GPU_BATCH,
        "model": f"MLP {_GPU_INPUT}->9x4096->1",
        "errors": {},
    }
    try:
        import torch
    except Exception as e:
        out["errors"]["import"] = f"torch: {e}"
        return out, 1
    if not torch.cuda.is_available():
        msg = "--gpu needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)"
        print(f"error: {msg}", file=sys.stderr)
        out["errors"]["device"] = msg
        return out, 1
    out["device"] = torch.cuda.get_device_name(0)
    out["torch"] = torch.__version__
    for mod in ("numpy", "ray", "ray.train", "deepspeed", "raymlp.training.loop"):
        try:
            __import__(mod)
        except Exception as e:
            out["errors"][f"import {mod}"] = f"{type(e).__name__}: {e}"
    warm, steps = (5, 20) if quick else (10, 60)
    dev = torch.device("cuda", 0)

    def ceiling() -> dict[str, Any]:
        n = 8192
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        for _ in range(5):
            a @ b
        k = 20 if quick else 50
        t = _timed_steps(lambda: a @ b, k)
        return {"tflops": 2 * n**3 * k / t / 1e12}

    out["ceiling"] = _phase(out, "bf16 matmul ceiling", ceiling)
    ceil_tflops = (out["ceiling"] or {}).get("tflops")

    def model():
        from raymlp.training.models import count_params, tabular_mlp

        torch.manual_seed(0)
        m = tabular_mlp(_GPU_INPUT, _GPU_HIDDEN)
        return m, count_params(m)

    def figures(samples_per_s: float, params: int) -> dict[str, Any]:
        tflops = 6 * params * samples_per_s / 1e12
        return {
            "samples_per_s": samples_per_s,
            "tflops": tflops,
            "mfu": tflops / ceil_tflops if ceil_tflops else None,
        }

    x = torch.randn(_GPU_BATCH, _GPU_INPUT, device=dev)
    y = (torch.rand(_GPU_BATCH, device=dev) < 0.5).float()

    def plain() -> dict[str, Any]:
        import torch.nn.functional as F

        m, params = model()
        m = m.to(dev)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.binary_cross_entropy_with_logits(m(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(warm):
            step()
        t = _timed_steps(step, steps)
        out["params"] = params
        return figures(_GPU_BATCH * steps / t, params)  # m, opt freed with this frame

    out["plain_torch"] = _phase(out, "plain PyTorch loop (autocast bf16, fused AdamW)", plain)

    def standalone_ds() -> dict[str, Any]:
        import torch.distributed as dist

        from raymlp.training.loop import build_engine, train_step

        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
        )
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
        try:
            m, params = model()
            engine, bf16, note = build_engine(
                m,
                {"name": "adamw", "lr": 1e-4},
                {"zero_stage": 2, "bf16": "auto"},
                micro_batch=_GPU_BATCH,
                world_size=1,
                device=dev,
            )
            xb = x.to(torch.bfloat16 if bf16 else torch.float32)
            for _ in range(warm):
                train_step(engine, xb, y)
            t = _timed_steps(lambda: train_step(engine, xb, y), steps)
            out["params"] = params
            return {**figures(_GPU_BATCH * steps / t, params), "precision": note}
        finally:
            dist.destroy_process_group()

    out["deepspeed_standalone"] = _phase(
        out, "standalone DeepSpeed ZeRO-2 loop (no Ray)", standalone_ds
    )

    def ray_train() -> dict[str, Any]:
        import ray

        from raymlp.training.loop import loop_config
        from raymlp.training.models import count_params, tabular_mlp

        params = count_params(tabular_mlp(_GPU_INPUT, _GPU_HIDDEN))
        ray.init(
            address="local",
            num_cpus=min(8, os.cpu_count() or 8),
            num_gpus=1,
            include_dashboard=False,
            logging_level="ERROR",
        )
        try:
            per_epoch = _GPU_BATCH * (steps // 2 if quick else steps)
            cfg = loop_config(
                model_factory="raymlp.training.models:tabular_mlp",
                model_kwargs={"hidden_dims": _GPU_HIDDEN},
                input_dim=_GPU_INPUT,
                optimizer={"name": "adamw", "lr": 1e-4},
                deepspeed={"zero_stage": 2, "bf16": "auto"},
                epochs=3,
                batch_size=_GPU_BATCH,
                data={"synthetic": {"rows_per_epoch": per_epoch}},
                checkpoint="metrics_only",
            )
            res = _ray_train_run(
                cfg,
                num_workers=1,
                cpus_per_worker=1,
                use_gpu=True,
                datasets=None,
                storage=tempfile.mkdtemp(prefix="raymlp-bench-gpu-"),
                name="bench-gpu",
            )
            return {**res, **figures(res["samples_per_s"], params)}
        finally:
            ray.shutdown()

    out["ray_train_deepspeed"] = _phase(
        out, "Ray Train TorchTrainer (1 GPU) + DeepSpeed ZeRO-2", ray_train
    )
    ours = (out["ray_train_deepspeed"] or {}).get("samples_per_s")
    anchor = (out["deepspeed_standalone"] or {}).get("samples_per_s")
    out["ours"], out["anchor"] = ours, anchor
    out["ratio"] = ours / anchor if ours and anchor else None
    out["within_10pct_of_standalone_deepspeed"] = (out["ratio"] >= 0.9) if out["ratio"] else None
    plain_sps = (out["plain_torch"] or {}).get("samples_per_s")
    out["vs_plain_torch"] = ours / plain_sps if ours and plain_sps else None
    return out, 0 if ours else 1


def main() -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument(
        "--gpu", action="store_true", help="one CUDA GPU: ~142.6M-param MLP, bf16, batch 16384, MFU"
    )
    args = ap.parse_args()
    if args.gpu:
        result, rc = run_gpu(args.quick)
        emit(result)
        return rc
    emit(run_cpu(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
