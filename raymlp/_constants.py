"""Every setting raymlp reads from the environment, in one place (``RAYMLP_*``).

Read at call time (not import time) so tests and drivers can set them late.
"""

from __future__ import annotations

import os

#: The Ray namespace every platform actor lives in.
NAMESPACE = "raymlp"

#: Internal-KV key under which ``raymlp up`` publishes the resolved platform config, so any
#: driver, job or replica that joins the cluster uses the same storage root.
PLATFORM_KV_KEY = b"raymlp/platform-config"

DEFAULT_CONFIG_FILE = "configs/platform.yaml"


def config_file() -> str | None:
    """``RAYMLP_CONFIG``: path of platform.yaml (else ``configs/platform.yaml`` if present)."""
    return os.environ.get("RAYMLP_CONFIG") or None


def storage_root_override() -> str | None:
    """``RAYMLP_STORAGE_ROOT``: overrides ``storage.root`` of platform.yaml."""
    return os.environ.get("RAYMLP_STORAGE_ROOT") or None


def ray_address() -> str | None:
    """``RAYMLP_ADDRESS`` (or Ray's own ``RAY_ADDRESS``): the cluster to join."""
    setting = ray_address_setting()
    return setting[0] if setting else None


def ray_address_setting() -> tuple[str, str] | None:
    """The cluster to join as set in the environment, with the variable that set it:
    ``RAYMLP_ADDRESS``, else Ray's own ``RAY_ADDRESS``; None when neither is set."""
    for name in ("RAYMLP_ADDRESS", "RAY_ADDRESS"):
        value = (os.environ.get(name) or "").strip()
        if value:
            return value, name
    return None


def ray_env_address() -> str | None:
    """Ray's own ``RAY_ADDRESS``: like Ray, it takes the place of an ``auto`` address."""
    value = (os.environ.get("RAY_ADDRESS") or "").strip()
    return value or None


def cluster_probe_timeout_s() -> float:
    """``RAYMLP_PROBE_TIMEOUT_S``: how long joining a cluster waits for its address to accept a
    TCP connection before calling it dead (default 3; Ray itself retries a dead GCS for
    minutes)."""
    return float(os.environ.get("RAYMLP_PROBE_TIMEOUT_S", "3"))


def api_key() -> str | None:
    """``RAYMLP_API_KEY``: the API key the CLI and SDK act with."""
    return os.environ.get("RAYMLP_API_KEY") or None


def platform_secret() -> bytes | None:
    """``RAYMLP_PLATFORM_SECRET``: the key service tokens are signed with (default: the file
    ``auth.secret_file``, else ``<storage root>/_platform/secret``)."""
    value = os.environ.get("RAYMLP_PLATFORM_SECRET")
    return value.encode() if value else None


def principal_name() -> str | None:
    """``RAYMLP_PRINCIPAL``: act as this principal (with auth on: a service principal only)."""
    return os.environ.get("RAYMLP_PRINCIPAL") or None


def debug() -> bool:
    """``RAYMLP_DEBUG``: the CLI and jobs re-raise a RayMLPError (its traceback) after the
    one-line message."""
    return bool(os.environ.get("RAYMLP_DEBUG"))


def actor_call_timeout_s() -> float:
    """``RAYMLP_ACTOR_TIMEOUT_S``: how long the SDK waits for one actor call (default 60)."""
    return float(os.environ.get("RAYMLP_ACTOR_TIMEOUT_S", "60"))


def driver_read_max_bytes() -> int:
    """``RAYMLP_DRIVER_READ_MAX_MB``: Parquet entity tables up to this size (default 256 MB)
    are read by the driver in one pass and handed to Ray Data as blocks; larger ones are read
    by Ray Data's distributed reader. Ray Data's read costs seconds of fixed overhead (its
    list/read tasks on fresh worker processes), which dominates a small table; 0 turns the
    driver read off."""
    return int(float(os.environ.get("RAYMLP_DRIVER_READ_MAX_MB", "256")) * 1024 * 1024)


def spool_dir() -> str | None:
    """``RAYMLP_SPOOL_DIR``: where gateways spool prediction-log records not yet shipped
    (node-local; default ``<tmp>/raymlp-spool-<uid>``, one subdirectory per platform)."""
    return os.environ.get("RAYMLP_SPOOL_DIR") or None
