"""Streaming prediction job: ``python -m jobs.stream_predict --config configs/jobs/stream_predict_churn.yaml``.

A long-running job: tails the events source (by default the new commits of a Delta table),
pushes each micro-batch's features to the feature store, scores every event (through the Serve
application when it is deployed, else a local predictor) and appends the results to
``<root>/predictions/<output>`` together with the source offset, in one Delta commit — so a
restarted job resumes exactly where the last commit left off (no event lost, none twice).

``--max-batches N`` stops after N micro-batches, ``--until-idle`` when a poll finds nothing new
(tests, the demo, backfills); otherwise it runs until SIGTERM/SIGINT, finishing the batch in hand.
On a cluster::

    ray job submit --working-dir . -- python -m jobs.stream_predict \\
        --config configs/jobs/stream_predict_churn.yaml
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Sequence

from jobs._common import job_parser, job_platform, run
from raymlp.config import StreamPredictJobConfig, load_config_file


def main(argv: Sequence[str] | None = None) -> int:
    from raymlp.inference.stream import run_stream

    ap = job_parser("stream_predict", "score events as they arrive, exactly once per event")
    ap.add_argument("--config", required=True, help="stream YAML (StreamPredictJobConfig)")
    ap.add_argument("--max-batches", type=int, default=None, help="stop after N micro-batches")
    ap.add_argument("--until-idle", action="store_true", help="stop when nothing new arrives")
    args = ap.parse_args(argv)
    if args.max_batches is not None and args.max_batches < 1:
        ap.error("--max-batches must be >= 1")
    cfg = load_config_file(StreamPredictJobConfig, args.config)
    p = job_platform(args)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():

        def _stop(signum: int, _frame: object) -> None:
            print(f"stream_predict: signal {signum}, stopping after this batch", flush=True)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    summary = run_stream(
        p,
        cfg,
        max_batches=args.max_batches,
        until_idle=args.until_idle,
        stop=stop,
        say=lambda m: print(m, flush=True),
    )
    print(
        f"stream_predict: {summary.events} events in {summary.batches} batches; "
        f"last committed batch {summary.last_batch}",
        flush=True,
    )
    print(json.dumps(summary.to_dict(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
