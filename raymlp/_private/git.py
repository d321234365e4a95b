"""The git commit a run records (training jobs, `p.registry.start_run`) and a model card shows."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["detect_git_commit"]


def detect_git_commit(path: str | Path = ".") -> str | None:
    """The HEAD commit of the git checkout at ``path`` (None outside one)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) >= 7 else None
