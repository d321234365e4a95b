"""Drift detection at scale: raymlp's vectorised PSI + KS + Wasserstein vs Evidently's data-drift
preset, on the same data in the same run.

Data: ``rows`` × 100 numeric features (reference and current, standard normal); 10 features of
the current set are shifted by 0.5σ. Both sides get the raw reference and current data and
must say which features drifted:

* **ours** — ``raymlp.monitoring.dataset_drift.compare_numeric``: profiles the reference (robust range,
  fine histogram) and scores every feature in one vectorised pass per dataset; a feature
  drifts when PSI ≥ 0.2 or Wasserstein/std ≥ 0.1 (effect sizes), confirmed by KS p < 0.01;
* **anchor** — Evidently 0.7 ``DataDriftPreset`` (its defaults: normed Wasserstein ≥ 0.1 for
  numeric columns above 1000 rows), run in its own virtualenv ``bench/.venv-evidently``
  (Evidently needs ``pandas<3``), created on first run, in a subprocess that loads the same
  ``.npy`` files and returns timings and per-feature verdicts as JSON.

    python -m bench.drift --quick          # 100k x 100
    python -m bench.drift                  # 1M x 100 (Evidently is given --anchor-timeout)

Last line: ``{"bench": "drift", "ours": s, "anchor": s, "ratio": anchor/ours,
"same_verdicts": bool, ...}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import emit, parser
from raymlp.config import DriftSettings
from raymlp.monitoring.dataset_drift import compare_numeric

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-evidently"
N_FEATURES = 100
N_SHIFTED = 10
SHIFT = 0.5

ANCHOR = r"""
import json, sys, time
import numpy as np
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset

ref = np.load(sys.argv[1], mmap_mode="r")
cur = np.load(sys.argv[2], mmap_mode="r")
cols = [f"f{i}" for i in range(ref.shape[1])]
t0 = time.perf_counter()
c0 = time.process_time()
ref_df = pd.DataFrame(np.asarray(ref), columns=cols)
cur_df = pd.DataFrame(np.asarray(cur), columns=cols)
snap = Report([DataDriftPreset()]).run(current_data=cur_df, reference_data=ref_df)
res = snap.dict()
seconds = time.perf_counter() - t0
cpu_seconds = time.process_time() - c0
verdicts, scores, methods = {}, {}, {}
for m in res["metrics"]:
    cfg = m.get("config") or {}
    col = cfg.get("column")
    if col is None or not str(cfg.get("type", "")).endswith("ValueDrift"):
        continue
    method = str(cfg.get("method") or "")
    thr = cfg.get("threshold")
    val = m["value"]
    # Evidently: distances drift when >= threshold, p-value tests when < threshold
    verdicts[col] = bool(val < thr) if "p_value" in method else bool(val >= thr)
    scores[col] = val
    methods[col] = method
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "verdicts": verdicts,
                  "scores": scores,
                  "methods": sorted(set(methods.values()))}))
"""


def ensure_anchor_env() -> Path:
    """Create ``bench/.venv-evidently`` with Evidently 0.7 (once); returns its python."""
    py = VENV / "bin" / "python"
    if py.exists():
        probe = subprocess.run([str(py), "-c", "import evidently, pandas"], capture_output=True)
        if probe.returncode == 0:
            return py
    print(f"creating {VENV} (evidently 0.7, pandas<3) ...", flush=True)
    subprocess.run([os.environ.get("PYTHON3", "python3"), "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "evidently==0.7.*", "pandas<3"], check=True
    )
    return py


def make_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((rows, N_FEATURES))
    cur = rng.standard_normal((rows, N_FEATURES))
    shifted = sorted(rng.choice(N_FEATURES, N_SHIFTED, replace=False).tolist())
    cur[:, shifted] += SHIFT
    return ref, cur, [f"f{i}" for i in shifted]


def run_ours(
    ref: np.ndarray, cur: np.ndarray, repeats: int
) -> tuple[float, float, dict[str, bool], list[dict]]:
    """(median wall s, median CPU s, verdicts, rows) of ``repeats`` runs."""
    names = [f"f{i}" for i in range(ref.shape[1])]
    times, cpu, rows = [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = compare_numeric(ref, cur, names=names, settings=DriftSettings())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    verdicts = {r["feature"]: r["drifted"] for r in rows}
    return float(np.median(times)), float(np.median(cpu)), verdicts, rows


def run_anchor(ref_path: Path, cur_path: Path, timeout_s: float) -> dict | None:
    py = ensure_anchor_env()
    try:
        proc = subprocess.run(
            [str(py), "-c", ANCHOR, str(ref_path), str(cur_path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"evidently anchor failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument(
        "--rows", type=int, default=None, help="rows per dataset (default 1M; --quick: 100k)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median)")
    ap.add_argument(
        "--anchor-timeout",
        type=float,
        default=None,
        help="seconds Evidently may take (default: 300 quick, 900 full)",
    )
    ap.add_argument("--skip-anchor", action="store_true", help="time ours only")
    args = ap.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    timeout = args.anchor_timeout or (300.0 if args.quick else 900.0)
    print(
        f"data: {rows} rows x {N_FEATURES} features, {N_SHIFTED} shifted by {SHIFT} sigma",
        flush=True,
    )
    ref, cur, truth = make_data(rows)
    ours_s, ours_cpu, ours_v, ours_rows = run_ours(ref, cur, args.repeats)
    flagged = sorted((f for f, d in ours_v.items() if d), key=lambda f: int(f[1:]))
    print(f"ours: {ours_s:.3f} s (median of {args.repeats}); flagged {flagged}", flush=True)
    ks_only = sum(1 for r in ours_rows if r["ks_p"] < 0.05 and not r["drifted"])
    result: dict = {
        "bench": "drift",
        "unit": "s",
        "rows": rows,
        "features": N_FEATURES,
        "shifted": truth,
        "ours": round(ours_s, 4),
        "ours_cpu_s": round(ours_cpu, 4),
        "ours_flagged": flagged,
        "ours_correct": flagged == truth,
        "ks_p_below_0.05_but_not_drifted": ks_only,
    }
    anchor = None
    if not args.skip_anchor:
        with tempfile.TemporaryDirectory(prefix="raymlp-drift-bench-") as d:
            ref_path, cur_path = Path(d) / "ref.npy", Path(d) / "cur.npy"
            np.save(ref_path, ref)
            np.save(cur_path, cur)
            del ref, cur  # leave the memory to Evidently
            print(f"anchor: Evidently DataDriftPreset (timeout {timeout:.0f} s) ...", flush=True)
            anchor = run_anchor(ref_path, cur_path, timeout)
    if anchor is None:
        result.update(
            anchor=None,
            ratio=None,
            same_verdicts=None,
            anchor_note=None
            if args.skip_anchor
            else f"Evidently did not finish within {timeout:.0f} s "
            f"(ratio > {timeout / ours_s:.0f})",
        )
    else:
        ev_flagged = sorted(
            (f for f, d in anchor["verdicts"].items() if d), key=lambda f: int(f[1:])
        )
        print(
            f"anchor: {anchor['seconds']:.2f} s; flagged {ev_flagged} "
            f"(methods {anchor['methods']})",
            flush=True,
        )
        result.update(
            anchor=round(anchor["seconds"], 3),
            ratio=round(anchor["seconds"] / ours_s, 1),
            same_verdicts=anchor["verdicts"] == ours_v,
            anchor_cpu_s=round(anchor["cpu_seconds"], 3),
            cpu_ratio=round(anchor["cpu_seconds"] / max(ours_cpu, 1e-9), 1),
            anchor_flagged=ev_flagged,
            anchor_methods=anchor["methods"],
        )
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
