"""Shared test configuration: keep Ray quiet and local, and give each test its own storage root."""

from __future__ import annotations

import os

# Tests never join a cluster a developer happens to have running.
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("RAYMLP_ADDRESS", None)
os.environ.pop("RAYMLP_CONFIG", None)
os.environ.pop("RAYMLP_STORAGE_ROOT", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray Train V2 is the default in 2.60; keep it explicit so behaviour doesn't drift.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
