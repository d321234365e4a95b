"""GPU path of serving/batch inference: the real artifact → ``load_predictor(device=...)`` →
``predict_proba`` code that ModelServer replicas and batch inference run, on CUDA vs CPU.

    python -m bench.gpu_inference [--quick]

Builds a churn artifact from synthetic data (preprocessing fitted with the training package's own
fitter, a wide MLP so the GPU has work), then measures rows/s of ``predict_proba`` for batch sizes
256..16384 on ``cuda`` and on ``cpu`` (the anchor), and checks both give the same probabilities.
Without a GPU it prints an error in the JSON and exits 1. Last line: one JSON object.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from bench._common import emit, parser


def main() -> int:
    args = parser(__doc__.splitlines()[0]).parse_args()
    out: dict[str, Any] = {"bench": "gpu_inference", "unit": "rows/s", "errors": {}}
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        out["errors"]["device"] = "no CUDA GPU visible to torch"
        emit(out)
        return 1
    from raymlp.predictor.artifact import load_predictor, save_artifact
    from raymlp.predictor.preprocessing import PreprocessorFitter
    from raymlp.training.models import tabular_mlp
    from raymlp.training.synthetic import CHURN_FEATURES, churn_table

    table = churn_table(50_000, seed=1)
    fitter = PreprocessorFitter(list(CHURN_FEATURES))
    fitter.update(table)
    pre = fitter.finish()
    kwargs = {"hidden_dims": [1024, 1024, 1024]}
    model = tabular_mlp(pre.output_dim, **kwargs)
    signature = {"inputs": pre.signature_inputs(),
                 "output": {"name": "churned", "kind": "binary", "labels": ["no", "yes"]}}
    art = save_artifact(tempfile.mkdtemp(prefix="raymlp-gpu-art-"),
                        factory="raymlp.training.models:tabular_mlp", kwargs=kwargs,
                        state_dict=model.state_dict(), preprocessor=pre, signature=signature)
    gpu, cpu = load_predictor(art, device="cuda"), load_predictor(art, device="cpu")
    out["device"] = torch.cuda.get_device_name(0)
    sizes = [256, 1024, 4096] if args.quick else [256, 1024, 4096, 16384]
    for bs in sizes:
        batch = table.slice(0, bs)
        p_gpu, p_cpu = gpu.predict_proba(batch), cpu.predict_proba(batch)
        out[f"max_abs_diff_{bs}"] = float(np.max(np.abs(p_gpu - p_cpu)))
        for name, pred in (("cuda", gpu), ("cpu", cpu)):
            reps = 20 if name == "cuda" else 3
            pred.predict_proba(batch)
            t = time.perf_counter()
            for _ in range(reps):
                pred.predict_proba(batch)
            if name == "cuda":
                torch.cuda.synchronize()
            out[f"{name}_rows_per_s_{bs}"] = bs * reps / (time.perf_counter() - t)
        print(f"batch {bs}: cuda {out[f'cuda_rows_per_s_{bs}']:,.0f} rows/s, cpu "
              f"{out[f'cpu_rows_per_s_{bs}']:,.0f} rows/s, max |diff| "
              f"{out[f'max_abs_diff_{bs}']:.2e}", flush=True)
    top = sizes[-1]
    out["ours"] = out[f"cuda_rows_per_s_{top}"]
    out["anchor"] = out[f"cpu_rows_per_s_{top}"]
    out["ratio"] = out["ours"] / out["anchor"]
    out["same_predictions"] = all(out[f"max_abs_diff_{b}"] < 1e-3 for b in sizes)
    emit(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
