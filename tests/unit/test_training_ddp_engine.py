"""The DDP engine: the rules of ``engine: auto``, DeepSpeed-style gradient accumulation and
clipping, and a checkpoint that restores weights, optimizer moments and the step count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raymlp.config.training import DeepSpeedSettings
from raymlp.training.ddp_engine import DDP_MAX_PARAMS, DDPEngine, choose_engine
from raymlp.training.loop import build_engine
from raymlp.training.models import tabular_mlp

CPU = torch.device("cpu")


def test_auto_picks_ddp_for_small_models_and_deepspeed_where_zero_matters():
    small, big = 10_000, DDP_MAX_PARAMS + 1
    assert choose_engine({"engine": "auto", "zero_stage": 2}, small) == "ddp"
    assert choose_engine({"engine": "auto", "zero_stage": 2}, big) == "deepspeed"
    assert choose_engine({"engine": "auto", "zero_stage": 3}, small) == "deepspeed"
    assert choose_engine({"engine": "auto", "offload_optimizer": True}, small) == "deepspeed"
    assert choose_engine({"engine": "auto", "extra": {"fp16": {}}}, small) == "deepspeed"
    assert choose_engine({"engine": "deepspeed"}, small) == "deepspeed"
    assert choose_engine({}, small) == "deepspeed"  # a hand-made loop config keeps DeepSpeed
    assert choose_engine({"engine": "ddp"}, big) == "ddp"
    assert DeepSpeedSettings().engine == "auto"
    with pytest.raises(ValueError, match="engine 'ddp' has no ZeRO-3"):
        DeepSpeedSettings(engine="ddp", zero_stage=3)


def _step_pair(accumulate: int, clip: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), (torch.rand(64) < 0.5).float()
    ref = tabular_mlp(8, [16])
    model = tabular_mlp(8, [16])
    model.load_state_dict(ref.state_dict())
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.0)
    loss = F.binary_cross_entropy_with_logits(ref(x).reshape(-1), y)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)
    opt.step()
    engine = DDPEngine(
        model,
        {"name": "adamw", "lr": 1e-2},
        {"gradient_accumulation_steps": accumulate, "gradient_clipping": clip},
        device=CPU,
        bf16=False,
    )
    part = 64 // accumulate
    for i in range(accumulate):
        xb, yb = x[i * part : (i + 1) * part], y[i * part : (i + 1) * part]
        engine.backward(F.binary_cross_entropy_with_logits(engine(xb).reshape(-1), yb))
        engine.step()
    return ref, engine.module


@pytest.mark.parametrize("accumulate,clip", [(1, 0.0), (4, 0.0), (2, 0.05)])
def test_accumulated_micro_batches_step_like_one_batch(accumulate, clip):
    ref, got = _step_pair(accumulate, clip)
    for a, b in zip(ref.state_dict().values(), got.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_checkpoint_restores_weights_optimizer_and_steps(tmp_path):
    torch.manual_seed(1)
    x, y = torch.randn(32, 8), (torch.rand(32) < 0.5).float()

    def engine() -> DDPEngine:
        torch.manual_seed(2)
        return DDPEngine(tabular_mlp(8, [16]), {"name": "adam", "lr": 1e-2}, {}, device=CPU,
                         bf16=False)

    def step(e: DDPEngine) -> None:
        e.backward(F.binary_cross_entropy_with_logits(e(x).reshape(-1), y))
        e.step()

    a = engine()
    for _ in range(3):
        step(a)
    a.save_checkpoint(str(tmp_path), tag="ds")
    b = engine()
    b.load_checkpoint(str(tmp_path), tag="ds")
    assert b.micro_steps == 3
    step(a)
    step(b)  # the same Adam moments, so the same next step
    for p, q in zip(a.module.parameters(), b.module.parameters()):
        torch.testing.assert_close(p, q)


def test_build_engine_returns_the_ddp_engine_for_auto_on_a_small_model():
    engine, bf16, note = build_engine(
        tabular_mlp(8, [16]),
        {"name": "adamw", "lr": 1e-3},
        {"engine": "auto", "zero_stage": 2, "bf16": "auto"},
        micro_batch=32,
        world_size=1,
        device=CPU,
    )
    assert isinstance(engine, DDPEngine) and bf16 is False and note.startswith("fp32")
