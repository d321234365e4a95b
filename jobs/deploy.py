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
import os
import sys
from collections.abc import Sequence

from raymlp.cli._serve import add_deploy_arguments, run_deploy
from raymlp.errors import RayMLPError


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.deploy", description=__doc__.splitlines()[0])
    add_deploy_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run_deploy(args)
    except RayMLPError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if os.environ.get("RAYMLP_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
