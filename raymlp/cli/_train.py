"""``raymlp train --config configs/train/churn.yaml``: run the training job on the platform.

Same as ``python -m jobs.train --config ...`` (and ``ray job submit -- python -m jobs.train``).
``--config`` here is the *training* YAML; the platform's is ``--platform-config``.
"""

from __future__ import annotations

import argparse
from typing import Any

from raymlp.cli._common import add_train_arguments, run_train

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    # Not built on `common`: its --config is platform.yaml, here --config is the training YAML.
    p = sub.add_parser(
        "train",
        help="train a model: features -> Tune x Train + DeepSpeed -> registry (+ fallback, gate)",
        description="Run the training job of a configs/train/*.yaml file on the platform.",
    )
    add_train_arguments(p)
    p.set_defaults(handler=run_train)
