"""Training job: ``python -m jobs.train --config configs/train/churn.yaml``.

Submit it to a cluster with::

    ray job submit --working-dir . -- python -m jobs.train --config configs/train/churn.yaml

It joins the cluster (``RAY_ADDRESS`` is set by ``ray job submit``), runs the whole training
pipeline (:mod:`raymlp.training.pipeline`) and exits 0, or 1 with a one-line reason.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs._common import run
from raymlp.cli._common import add_train_arguments, run_train


def _main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    add_train_arguments(ap)
    return run_train(ap.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; a RayMLPError is one line on stderr and exit code 1."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
