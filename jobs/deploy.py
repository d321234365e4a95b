"""Deploy job: ``python -m jobs.deploy --config configs/serve/churn.yaml``.

Submit it to a cluster with::

    ray job submit --working-dir . -- python -m jobs.deploy --config configs/serve/churn.yaml

It joins the cluster, deploys (or updates in place) the Serve application described by the serve
config, waits until every gateway has warmed the stable versions, prints the URL and the routes,
and exits 0 — the application keeps serving (Serve is detached from the job). Exit 1 with a
one-line reason on a bad config or an unavailable platform.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs._common import run
from raymlp.cli._common import add_deploy_arguments, run_deploy


def _main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.deploy", description=__doc__.splitlines()[0])
    add_deploy_arguments(ap)
    return run_deploy(ap.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; a RayMLPError is one line on stderr and exit code 1."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
