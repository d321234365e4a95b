"""Time-bucketed, mergeable counters: the in-memory windows of the monitor.

Traffic is folded into fixed-width time buckets (``monitor.bucket``, 1 minute by default) of
small additive *cells* — counts and histograms that merge by addition. A sliding window or a
report's time range is the sum of the cells whose bucket lies in it, so windows of any length
cost one pass over at most ``retention / bucket`` buckets, and a restarted monitor rebuilds them
exactly by replaying the prediction log::

    >>> store = BucketStore(width_s=60, retention_s=3600)
    >>> store.cell(store.index(125.0), ("churn",), PerfCell).add_request(0.004, error=False)
    >>> merged = store.merge(0.0, 180.0, PerfCell)
    >>> merged[("churn",)].requests
    1
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from raymlp.monitoring.stats import auc_binned, quantile_from_histogram

__all__ = [
    "LATENCY_EDGES_S",
    "PROB_BINS",
    "BucketStore",
    "PerfCell",
    "AccuracyCell",
    "FairnessCell",
    "CountCell",
    "latency_bins",
    "prob_bins",
]

#: Latency histogram edges (seconds): 0, then 100 µs to ~2 min in steps of 2^(1/4) (≈19%),
#: so a quantile read from the histogram is within ~10% of the exact one.
LATENCY_EDGES_S = np.concatenate([[0.0], 1e-4 * 2.0 ** (np.arange(0, 81) / 4.0)])
#: Bins of the predicted probability (canary-vs-stable drift, AUC).
PROB_BINS = 100
_PROB_EDGES = np.linspace(0.0, 1.0, PROB_BINS + 1)


def latency_bins(latency_s: np.ndarray) -> np.ndarray:
    """Histogram bin of each latency (the last bin is open-ended)."""
    return np.minimum(
        np.searchsorted(LATENCY_EDGES_S, latency_s, side="right") - 1, LATENCY_EDGES_S.size - 2
    ).clip(0)


def prob_bins(p: np.ndarray) -> np.ndarray:
    """Bin of each probability in ``PROB_BINS`` equal bins over [0, 1]."""
    return np.minimum(
        (np.asarray(p, dtype=np.float64) * PROB_BINS).astype(np.int64), PROB_BINS - 1
    ).clip(0)


class Cell(Protocol):
    def merge(self, other: Any) -> None: ...


C = TypeVar("C")


@dataclass
class PerfCell:
    """Requests of one (model, version, route, tenant) in one bucket."""

    requests: int = 0
    errors: int = 0
    latency_count: int = 0
    latency_sum_s: float = 0.0
    latency_hist: np.ndarray = field(
        default_factory=lambda: np.zeros(LATENCY_EDGES_S.size - 1, np.int64)
    )
    prob_count: int = 0
    prob_hist: np.ndarray = field(default_factory=lambda: np.zeros(PROB_BINS, np.int64))
    error_codes: dict[str, int] = field(default_factory=dict)

    def add_request(
        self,
        latency_s: float | None,
        error: bool,
        code: str | None = None,
        probability: float | None = None,
    ) -> None:
        self.requests += 1
        if error:
            self.errors += 1
            key = code or "error"
            self.error_codes[key] = self.error_codes.get(key, 0) + 1
        if latency_s is not None:
            self.latency_count += 1
            self.latency_sum_s += latency_s
            self.latency_hist[latency_bins(np.array([latency_s]))[0]] += 1
        if probability is not None:
            self.prob_count += 1
            self.prob_hist[prob_bins(np.array([probability]))[0]] += 1

    def add_batch(
        self,
        latency_s: np.ndarray,
        errors: int,
        codes: dict[str, int],
        probabilities: np.ndarray,
        requests: int,
    ) -> None:
        """Vectorised :meth:`add_request` (NaN latency/probability = absent)."""
        self.requests += requests
        self.errors += errors
        for k, v in codes.items():
            self.error_codes[k] = self.error_codes.get(k, 0) + v
        lat = latency_s[~np.isnan(latency_s)]
        if lat.size:
            self.latency_count += int(lat.size)
            self.latency_sum_s += float(lat.sum())
            self.latency_hist += np.bincount(latency_bins(lat), minlength=self.latency_hist.size)
        pr = probabilities[~np.isnan(probabilities)]
        if pr.size:
            self.prob_count += int(pr.size)
            self.prob_hist += np.bincount(prob_bins(pr), minlength=PROB_BINS)

    def merge(self, other: PerfCell) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency_count += other.latency_count
        self.latency_sum_s += other.latency_sum_s
        self.latency_hist += other.latency_hist
        self.prob_count += other.prob_count
        self.prob_hist += other.prob_hist
        for k, v in other.error_codes.items():
            self.error_codes[k] = self.error_codes.get(k, 0) + v

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def latency_quantile(self, q: float) -> float | None:
        """Latency quantile in seconds (None without latencies)."""
        return quantile_from_histogram(LATENCY_EDGES_S, self.latency_hist, q)

    @property
    def latency_mean_s(self) -> float | None:
        return self.latency_sum_s / self.latency_count if self.latency_count else None


@dataclass
class AccuracyCell:
    """Labelled predictions of one (model, version, route, tenant) in one bucket."""

    labelled: int = 0
    scored: int = 0  # with a correctness verdict
    correct: int = 0
    pos_hist: np.ndarray = field(default_factory=lambda: np.zeros(PROB_BINS, np.int64))
    neg_hist: np.ndarray = field(default_factory=lambda: np.zeros(PROB_BINS, np.int64))

    def add(
        self, correct: bool | None, label_positive: bool | None, probability: float | None
    ) -> None:
        self.labelled += 1
        if correct is not None:
            self.scored += 1
            self.correct += int(correct)
        if label_positive is not None and probability is not None:
            b = prob_bins(np.array([probability]))[0]
            (self.pos_hist if label_positive else self.neg_hist)[b] += 1

    def merge(self, other: AccuracyCell) -> None:
        self.labelled += other.labelled
        self.scored += other.scored
        self.correct += other.correct
        self.pos_hist += other.pos_hist
        self.neg_hist += other.neg_hist

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    @property
    def auc(self) -> float | None:
        return auc_binned(self.pos_hist, self.neg_hist)


@dataclass
class FairnessCell:
    """One slice (value of the fairness attribute) of one model in one bucket."""

    requests: int = 0
    predicted_positive: int = 0
    labelled: int = 0
    correct: int = 0
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def merge(self, other: FairnessCell) -> None:
        for f in ("requests", "predicted_positive", "labelled", "correct", "tp", "fp", "tn", "fn"):
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def add_label(
        self, correct: bool | None, label_pos: bool | None, pred_pos: bool | None
    ) -> None:
        self.labelled += 1
        self.correct += int(bool(correct))
        if label_pos is not None and pred_pos is not None:
            if label_pos and pred_pos:
                self.tp += 1
            elif pred_pos:
                self.fp += 1
            elif label_pos:
                self.fn += 1
            else:
                self.tn += 1


class BucketStore:
    """Cells by (bucket index, key); old buckets fall off past ``retention_s``.

    Args:
        width_s: bucket width in seconds.
        retention_s: how far back from the newest bucket cells are kept.
    """

    def __init__(self, width_s: float, retention_s: float) -> None:
        if width_s <= 0:
            raise ValueError(f"bucket width {width_s} must be > 0")
        self.width_s = float(width_s)
        self.keep = max(int(math.ceil(retention_s / width_s)), 1)
        self._buckets: dict[int, dict[Hashable, Any]] = {}
        self.newest = -(2**62)

    def index(self, ts: float) -> int:
        return int(ts // self.width_s)

    def start_of(self, index: int) -> float:
        return index * self.width_s

    def accepts(self, index: int, now: float | None = None) -> bool:
        """Whether a bucket is still inside the retention horizon."""
        ref = max(self.newest, self.index(now) if now is not None else self.newest)
        return index > ref - self.keep

    def cell(self, index: int, key: Hashable, factory: Callable[[], C]) -> C:
        """The cell of ``key`` in bucket ``index`` (created empty)."""
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = {}
            if index > self.newest:
                self.newest = index
                self.prune()
        c = bucket.get(key)
        if c is None:
            c = bucket[key] = factory()
        return c

    def prune(self, now: float | None = None) -> None:
        ref = max(self.newest, self.index(now) if now is not None else self.newest)
        for i in [i for i in self._buckets if i <= ref - self.keep]:
            del self._buckets[i]

    def buckets(self, start: float | None, end: float | None) -> list[int]:
        """Bucket indexes overlapping [start, end), oldest first."""
        lo = -(2**62) if start is None else self.index(start)
        hi = 2**62 if end is None else int(math.ceil(end / self.width_s)) - 1
        return sorted(i for i in self._buckets if lo <= i <= hi)

    def items(self, start: float | None, end: float | None) -> Iterable[tuple[int, Hashable, Any]]:
        for i in self.buckets(start, end):
            for key, c in self._buckets[i].items():
                yield i, key, c

    def merge(
        self,
        start: float | None,
        end: float | None,
        factory: Callable[[], C],
        key_fn: Callable[[Hashable], Hashable | None] | None = None,
    ) -> dict[Hashable, C]:
        """Sum the cells in [start, end) per key (``key_fn`` regroups keys; None drops one)."""
        out: dict[Hashable, C] = {}
        for _, key, c in self.items(start, end):
            k = key if key_fn is None else key_fn(key)
            if k is None:
                continue
            acc = out.get(k)
            if acc is None:
                acc = out[k] = factory()
            acc.merge(c)  # type: ignore[attr-defined]
        return out

    def timeline(
        self,
        start: float | None,
        end: float | None,
        factory: Callable[[], C],
        key_fn: Callable[[Hashable], Hashable | None],
    ) -> dict[int, C]:
        """Per bucket, the sum of the cells whose key_fn is not None."""
        out: dict[int, C] = {}
        for i, key, c in self.items(start, end):
            if key_fn(key) is None:
                continue
            acc = out.get(i)
            if acc is None:
                acc = out[i] = factory()
            acc.merge(c)  # type: ignore[attr-defined]
        return out

    def clear(self) -> None:
        self._buckets.clear()
        self.newest = -(2**62)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class CountCell:
    """A plain count (e.g. log records dropped by a client, per source)."""

    count: int = 0

    def merge(self, other: CountCell) -> None:
        self.count += other.count
