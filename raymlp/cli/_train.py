"""``raymlp train --config configs/train/churn.yaml``: run the training job on the platform.

Same as ``python -m jobs.train --config ...`` (and ``ray job submit -- python -m jobs.train``).
``--config`` here is the *training* YAML; the platform's is ``--platform-config``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from raymlp.cli._serve import add_connect_arguments
from raymlp.errors import ConfigError

__all__ = ["register", "add_train_arguments", "run_train", "parse_overrides"]


def add_train_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments of ``raymlp train`` / ``python -m jobs.train``."""
    ap.add_argument(
        "--config",
        required=True,
        metavar="TRAIN_YAML",
        help="training config, e.g. configs/train/churn.yaml",
    )
    add_connect_arguments(ap)
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (value parsed as YAML), e.g. "
        "--set tune.num_samples=2 --set scaling.num_workers=1",
    )
    ap.add_argument("--json", action="store_true", help="print the result as JSON")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` → ``{"a.b": 1, "c": [1, 2]}`` (values are YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE", field="--set", value=item)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not YAML: {e}", field=key) from None
    return out


def run_train(args: argparse.Namespace) -> int:
    """Load and validate the config (before touching the cluster), connect, run the job."""
    from raymlp.client import connect
    from raymlp.config import load_train_config
    from raymlp.training.pipeline import run_training_job
    from raymlp.training.tuning import apply_overrides

    cfg = load_train_config(args.config)
    if args.overrides:
        cfg = apply_overrides(cfg, parse_overrides(args.overrides), source=f"{args.config} --set")
    platform = connect(
        args.address,
        config=args.platform_config,
        api_key=args.api_key,
        start="persistent" if args.address is None else "never",
    )
    result = run_training_job(platform, cfg)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        m = result.test_metrics
        print(f"model      {result.model_name} v{result.version}  ({result.artifact_uri})")
        print(
            f"test       auc {m['auc']:.4f}  accuracy {m['accuracy']:.4f}  log_loss "
            f"{m['log_loss']:.4f}  brier {m['brier']:.4f}  ece {m['ece']:.4f}"
        )
        if result.fallback_version is not None:
            print(
                f"fallback   {result.fallback_name} v{result.fallback_version}  (test auc "
                f"{result.fallback_metrics['auc']:.4f})"
            )
        if result.int8:
            print(f"int8       test auc delta {result.int8['auc_delta']:+.4f}")
        print(f"gate       {result.gate.get('reason')}")
        if result.promotion:
            print(f"promotion  {result.promotion}")
        print(f"run        {result.run_id}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    # Not built on `common`: its --config is platform.yaml, here --config is the training YAML.
    p = sub.add_parser(
        "train",
        help="train a model: features -> Tune x Train + DeepSpeed -> registry (+ fallback, gate)",
        description="Run the training job of a configs/train/*.yaml file on the platform.",
    )
    add_train_arguments(p)
    p.set_defaults(handler=run_train)
