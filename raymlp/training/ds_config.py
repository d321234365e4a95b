"""The DeepSpeed JSON config, generated from the YAML's ``deepspeed`` and ``optimizer`` sections.

Imports only torch, so the GPU benchmark can use it on a machine with nothing else installed::

    >>> cfg = build_deepspeed_config({"zero_stage": 2}, {"name": "adamw", "lr": 1e-3},
    ...                              micro_batch=256, world_size=2, bf16=False)
    >>> cfg["train_batch_size"], cfg["zero_optimization"]["stage"]
    (512, 2)
    >>> cfg["optimizer"]["params"]["torch_adam"]
    True

Choices:

- Adam/AdamW go through DeepSpeed's optimizer config with ``"torch_adam": true`` (torch's
  implementation; DeepSpeed would otherwise JIT-compile FusedAdam/CPUAdam on first use). SGD and
  Adagrad are torch optimizers handed to ``deepspeed.initialize``.
- ``zero_force_ds_cpu_optimizer: false`` lets ZeRO-Offload step a torch optimizer on the CPU.
- bf16 is enabled only where the hardware has it (:func:`resolve_bf16`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "build_deepspeed_config",
    "resolve_bf16",
    "client_optimizer",
    "comm_backend",
    "ALLOWED_OPTIMIZERS",
]

log = logging.getLogger(__name__)

ALLOWED_OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
_DS_OPTIMIZER_TYPES = {"adam": "Adam", "adamw": "AdamW"}


def comm_backend(device: torch.device) -> str:
    """``nccl`` on CUDA devices, ``gloo`` otherwise (what Ray Train's TorchConfig picks too)."""
    return "nccl" if device.type == "cuda" else "gloo"


def _cpu_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # older torch without the probe: assume no native bf16 on this CPU
        return False


def resolve_bf16(requested: bool | str, device: torch.device) -> tuple[bool, str]:
    """Whether to train in bf16 on ``device``, and why.

    ``"auto"``: on for CUDA devices that support bf16 (Ampere and newer), off on CPU (bf16 is
    rarely faster there and DeepSpeed's CPU bf16 path is slow). ``True`` on hardware without
    bf16 falls back to fp32 (logged). ``False``: fp32.
    """
    if requested is False:
        return False, "fp32 (configured)"
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    else:
        ok = requested is True and _cpu_bf16_supported()
    if requested == "auto":
        return (ok, "bf16 (auto: supported)") if ok else (False, "fp32 (auto: no bf16 here)")
    if not ok:
        log.warning("bf16 requested but %s has no bf16 support: training in fp32", device)
        return False, "fp32 (bf16 requested but unsupported on this hardware)"
    return True, "bf16 (configured)"


def build_deepspeed_config(
    deepspeed: Mapping[str, Any],
    optimizer: Mapping[str, Any],
    *,
    micro_batch: int,
    world_size: int,
    bf16: bool,
    pin_memory: bool = False,
) -> dict[str, Any]:
    """The DeepSpeed config dict for one worker.

    Args:
        deepspeed: the YAML ``deepspeed`` section (``zero_stage``, ``offload_optimizer``,
            ``offload_params``, ``gradient_clipping``, ``gradient_accumulation_steps``, ``extra``).
        optimizer: the YAML ``optimizer`` section (``name``, ``lr``, ``weight_decay``, ``betas``).
        micro_batch: batch size per worker per step.
        world_size: number of data-parallel workers.
        bf16: resolved precision (see :func:`resolve_bf16`).
        pin_memory: pin offloaded CPU buffers (CUDA only).
    """
    stage = int(deepspeed.get("zero_stage", 2))
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage {stage} is not supported (rule: 0, 1, 2 or 3)")
    ga = int(deepspeed.get("gradient_accumulation_steps", 1))
    zero: dict[str, Any] = {"stage": stage}
    if deepspeed.get("offload_optimizer"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin_memory}
    if deepspeed.get("offload_params"):
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin_memory}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(micro_batch),
        "gradient_accumulation_steps": ga,
        "train_batch_size": int(micro_batch) * ga * int(world_size),
        "gradient_clipping": float(deepspeed.get("gradient_clipping", 0.0) or 0.0),
        "zero_optimization": zero,
        "bf16": {"enabled": bool(bf16)},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    name = str(optimizer.get("name", "adamw")).lower()
    if name not in ALLOWED_OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {name!r} (rule: one of {', '.join(ALLOWED_OPTIMIZERS)})"
        )
    if name in _DS_OPTIMIZER_TYPES:
        cfg["optimizer"] = {
            "type": _DS_OPTIMIZER_TYPES[name],
            "params": {
                "lr": float(optimizer.get("lr", 1e-3)),
                "betas": list(optimizer.get("betas", (0.9, 0.999))),
                "eps": 1e-8,
                "weight_decay": float(optimizer.get("weight_decay", 0.0)),
                # torch's Adam/AdamW: no FusedAdam/CPUAdam JIT build on first use.
                "torch_adam": True,
            },
        }
    extra = deepspeed.get("extra") or {}
    return _merge(cfg, extra)


def client_optimizer(optimizer: Mapping[str, Any], params: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer to hand to ``deepspeed.initialize`` (None for Adam/AdamW, which
    DeepSpeed builds from its config)."""
    name = str(optimizer.get("name", "adamw")).lower()
    lr = float(optimizer.get("lr", 1e-3))
    wd = float(optimizer.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=float(optimizer.get("momentum", 0.9)), weight_decay=wd
        )
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    return None


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
