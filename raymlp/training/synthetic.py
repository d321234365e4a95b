"""Synthetic churn data with a known signal, for tests, benchmarks and examples.

:func:`churn_table` is one flat table (features and label together). :func:`churn_feature_tables`
produces the feature-store shape of ``configs/features/churn.yaml`` — ``customer_profile`` and
``customer_usage`` rows over time plus a labelled entity table — and
``python -m raymlp.training.synthetic --out data/churn`` writes them as Parquet files
(``customer_profile.parquet``, ``customer_usage.parquet``, ``labels.parquet``).

Each customer has a few labelled observations over time; churn follows a logistic model of
tenure (shorter → more churn), monthly charges (higher → more), contract type (month-to-month →
more) and support calls (more → more), plus noise, so a good model reaches AUC ≈ 0.8::

    >>> from raymlp.training.synthetic import churn_table
    >>> t = churn_table(100, rows_per_customer=2, seed=0)
    >>> t.num_rows, sorted(t.column_names)[:3]
    (200, ['churned', 'contract', 'customer_id'])
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

__all__ = [
    "churn_table",
    "churn_feature_tables",
    "churn_usage_events",
    "append_usage_events",
    "CHURN_FEATURES",
    "main",
]

#: The feature columns of :func:`churn_table` (besides keys, timestamp and label).
CHURN_FEATURES = ("tenure_months", "monthly_charges", "contract", "support_calls")
_CONTRACTS = np.array(["month-to-month", "one-year", "two-year"])


def churn_table(
    n_customers: int, *, rows_per_customer: int = 1, seed: int = 0, noise: float = 1.0
) -> pa.Table:
    """``customer_id``, ``event_timestamp`` (UTC), the four features, ``churned`` (bool)."""
    rng = np.random.default_rng(seed)
    n = n_customers * rows_per_customer
    cust = np.repeat(np.arange(n_customers), rows_per_customer)
    base_tenure = rng.integers(1, 60, n_customers)
    step = np.tile(np.arange(rows_per_customer), n_customers)
    tenure = base_tenure[cust] + step * 3
    charges = np.round(rng.normal(70, 25, n).clip(15, 150), 2)
    contract = _CONTRACTS[rng.choice(3, n, p=[0.5, 0.3, 0.2])]
    calls = rng.poisson(1.5, n)
    logit = (
        -0.5
        - 0.05 * (tenure - 30)
        + 0.02 * (charges - 70)
        + np.select([contract == "month-to-month", contract == "one-year"], [1.0, -0.3], -1.2)
        + 0.35 * (calls - 1.5)
        + rng.normal(0, noise, n)
    )
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ts = [t0 + timedelta(days=int(30 * s) + int(c % 28)) for s, c in zip(step, cust)]
    return pa.table(
        {
            "customer_id": pa.array([f"c{c:06d}" for c in cust]),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "tenure_months": pa.array(tenure, pa.int64()),
            "monthly_charges": pa.array(charges, pa.float64()),
            "contract": pa.array(contract.tolist(), pa.string()),
            "support_calls": pa.array(calls, pa.int64()),
            "churned": pa.array(churned, pa.bool_()),
        }
    )


def churn_feature_tables(
    n_customers: int, *, months: int = 3, seed: int = 0, now: datetime | None = None
) -> dict[str, pa.Table]:
    """``{"customer_profile", "customer_usage", "labels"}`` for ``configs/features/churn.yaml``.

    Each customer gets a profile row a few days before each monthly label and usage rows a
    day or two before it (inside the views' TTLs), so a point-in-time join finds them; the
    label ``churned`` (bool) follows a logistic model of the features.

    Timeline: without ``now``, labels fall in the months from 2026-01-01 (reproducible); with
    ``now``, the last month ends at ``now`` — every customer's newest label lies in the five
    days before it, so the newest usage (TTL 7d) and profile (30d) rows are still fresh in the
    online store and serving by entity answers from real features.
    """
    rng = np.random.default_rng(seed)
    n = n_customers * months
    cust = np.repeat(np.arange(n_customers), months)
    month = np.tile(np.arange(months), n_customers)
    ids = np.array([f"c{c:06d}" for c in range(n_customers)])[cust]
    if now is None:
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        label_ts = [
            t0 + timedelta(days=30 * int(m) + int(c % 20), hours=12) for m, c in zip(month, cust)
        ]
    else:
        label_ts = [
            now - timedelta(days=30 * (months - 1 - int(m)) + int(c % 5), hours=12)
            for m, c in zip(month, cust)
        ]
    tenure = rng.integers(0, 72, n_customers)[cust] + month
    charges = np.round(rng.normal(65, 25, n_customers).clip(18, 120), 2)[cust]
    contract = np.array(["month-to-month", "one_year", "two_year"])[
        rng.choice(3, n_customers, p=[0.55, 0.25, 0.2])
    ][cust]
    paperless = (rng.random(n_customers) < 0.6)[cust]
    products = rng.integers(1, 5, n_customers)[cust].astype(np.int32)
    calls = rng.poisson(40, n)
    data_gb = np.round(rng.gamma(2.0, 3.0, n), 2)
    tickets = rng.poisson(0.8, n)
    dropped = rng.beta(1.2, 40, n).astype(np.float32)
    logit = (
        -1.0
        - 0.045 * (tenure - 30)
        + 0.018 * (charges - 65)
        + np.select([contract == "month-to-month", contract == "one_year"], [1.1, -0.2], -1.3)
        + 0.3 * paperless
        - 0.15 * (products - 2.5)
        + 0.45 * (tickets - 0.8)
        + 8.0 * (dropped - 0.03)
        - 0.01 * (calls - 40)
        + rng.normal(0, 0.8, n)
    )
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    ts = pa.timestamp("us", tz="UTC")
    profile_ts = [t - timedelta(days=int(d)) for t, d in zip(label_ts, rng.integers(1, 10, n))]
    usage_ts = [t - timedelta(hours=int(h)) for t, h in zip(label_ts, rng.integers(2, 48, n))]
    return {
        "customer_profile": pa.table(
            {
                "customer_id": ids,
                "event_timestamp": pa.array(profile_ts, ts),
                "tenure_months": pa.array(tenure, pa.int64()),
                "monthly_charges": pa.array(charges, pa.float64()),
                "total_charges": pa.array(
                    np.round(charges * np.maximum(tenure, 1), 2), pa.float64()
                ),
                "contract_type": pa.array(contract.tolist(), pa.string()),
                "paperless_billing": pa.array(paperless, pa.bool_()),
                "num_products": pa.array(products, pa.int32()),
            }
        ),
        "customer_usage": pa.table(
            {
                "customer_id": ids,
                "event_timestamp": pa.array(usage_ts, ts),
                "calls_last_30d": pa.array(calls, pa.int64()),
                "data_gb_last_30d": pa.array(data_gb, pa.float64()),
                "support_tickets_90d": pa.array(tickets, pa.int64()),
                "dropped_call_rate": pa.array(dropped, pa.float32()),
            }
        ),
        "labels": pa.table(
            {
                "customer_id": ids,
                "event_timestamp": pa.array(label_ts, ts),
                "churned": pa.array(churned, pa.bool_()),
            }
        ),
    }


def churn_usage_events(
    n_customers: int, n_events: int, *, seed: int | None = None, now: datetime | None = None
) -> pa.Table:
    """Fresh usage updates for the stream (``configs/jobs/stream_predict_churn.yaml``):
    ``event_id`` (unique), ``customer_id`` (one of the first ``n_customers``),
    ``event_timestamp`` (the last hour before ``now``) and the ``customer_usage`` features."""
    import uuid

    rng = np.random.default_rng(seed)
    now = now or datetime.now(UTC)
    batch = uuid.uuid4().hex[:8]
    cust = rng.integers(0, n_customers, n_events)
    ages = rng.integers(0, 3600, n_events)
    return pa.table(
        {
            "event_id": pa.array([f"{batch}-{i:06d}" for i in range(n_events)]),
            "customer_id": pa.array([f"c{c:06d}" for c in cust]),
            "event_timestamp": pa.array(
                [now - timedelta(seconds=int(a)) for a in ages], pa.timestamp("us", tz="UTC")
            ),
            "calls_last_30d": pa.array(rng.poisson(40, n_events), pa.int64()),
            "data_gb_last_30d": pa.array(np.round(rng.gamma(2.0, 3.0, n_events), 2)),
            "support_tickets_90d": pa.array(rng.poisson(0.8, n_events), pa.int64()),
            "dropped_call_rate": pa.array(rng.beta(1.2, 40, n_events).astype(np.float32)),
        }
    )


def append_usage_events(
    path: str, n_customers: int, n_events: int, *, seed: int | None = None
) -> pa.Table:
    """Append one commit of :func:`churn_usage_events` to the Delta table at ``path`` (a
    producer, for the stream job); returns the events."""
    from deltalake import write_deltalake

    events = churn_usage_events(n_customers, n_events, seed=seed)
    write_deltalake(path, events, mode="append")
    return events


def main(argv: list[str] | None = None) -> int:
    """``python -m raymlp.training.synthetic --out data/churn [--customers N] [--months M]``;
    ``--append-events PATH --events N``: one commit of fresh usage events to a Delta table."""
    import argparse
    from pathlib import Path

    import pyarrow.parquet as pq

    ap = argparse.ArgumentParser(description="write synthetic churn feature tables as Parquet")
    ap.add_argument("--out", default="data/churn")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--months", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--end", default=None, metavar="ISO_TIME",
                    help="the last month ends at this time (default: now, so the online store "
                    "holds fresh features); e.g. 2026-06-01T00:00:00+00:00")
    ap.add_argument("--append-events", metavar="DELTA_PATH", default=None,
                    help="append --events fresh usage events to this Delta table instead")
    ap.add_argument("--events", type=int, default=500, help="events per --append-events (500)")
    args = ap.parse_args(argv)
    if args.append_events:
        if args.events < 1:
            ap.error(f"--events must be >= 1 (got {args.events})")
        events = append_usage_events(args.append_events, args.customers, args.events)
        print(f"{args.append_events}: appended {events.num_rows} usage events")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        now = datetime.fromisoformat(args.end) if args.end else datetime.now(UTC)
    except ValueError:
        ap.error(f"--end {args.end!r} is not an ISO time")
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    for name, table in churn_feature_tables(
        args.customers, months=args.months, seed=args.seed, now=now
    ).items():
        pq.write_table(table, out / f"{name}.parquet")
        print(f"{out / name}.parquet: {table.num_rows} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
