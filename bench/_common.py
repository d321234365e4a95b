"""Shared benchmark plumbing: ``--quick``, timing helpers, and the one-JSON-object last line.

Every benchmark prints human-readable progress, then as its LAST line one JSON object with at
least ``bench``, ``ours``, ``anchor``, ``ratio`` (higher is better) and ``unit``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="a run of a minute or two")
    return ap


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/mean of latencies given in seconds, returned in milliseconds."""
    xs = sorted(samples_s)
    if not xs:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}

    def pct(p: float) -> float:
        return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))] * 1000

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "mean_ms": statistics.fmean(xs) * 1000}


def time_calls(fn: Callable[[], Any], n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def emit(result: dict[str, Any]) -> None:
    """Print the result as the last line (one JSON object)."""
    for key in ("bench", "ours", "anchor", "ratio", "unit"):
        result.setdefault(key, None)
    sys.stdout.flush()
    print(json.dumps(result, default=float), flush=True)
