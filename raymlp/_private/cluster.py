"""Cluster lifecycle: join or start Ray, create/remove the platform actors, report their status.

Used by ``raymlp up|down|status`` and by :func:`raymlp.connect`.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray

from actors import ACTOR_SPECS, ActorSpec, available_specs
from raymlp import _constants
from raymlp.config import PlatformConfig
from raymlp.errors import ConflictError, UnavailableError

logger = logging.getLogger(__name__)

StartMode = Literal["embedded", "persistent", "never"]


@dataclass
class ClusterInfo:
    address: str
    dashboard_url: str | None
    started_here: bool


def _ray_cli() -> str:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def _dashboard_url(ctx: Any) -> str | None:
    url = getattr(ctx, "dashboard_url", None)
    if not url:
        try:
            from ray._private.worker import get_dashboard_url

            url = get_dashboard_url()
        except Exception:
            url = None
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return url or None


def init_ray(
    cfg: PlatformConfig, address: str | None = None, *, start: StartMode = "embedded"
) -> ClusterInfo:
    """Join the cluster at ``address`` (default: ``RAYMLP_ADDRESS``, then ``cfg.ray.address``).

    ``auto`` joins a running cluster if there is one; if none runs, ``start`` decides: ``embedded``
    starts Ray inside this process (it stops with it), ``persistent`` runs ``ray start --head`` (it
    outlives this process, e.g. for ``raymlp up``), ``never`` raises UnavailableError.
    """
    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return ClusterInfo(ctx.gcs_address, _dashboard_url(None), started_here=False)
    address = address or _constants.ray_address() or cfg.ray.address
    ns = cfg.ray.namespace
    common = dict(namespace=ns, logging_level=logging.WARNING, configure_logging=True,
                  log_to_driver=True)
    if address == "local":
        return _start_embedded(cfg, common)
    if address != "auto":
        try:
            ctx = ray.init(address=address, **common)
        except (ConnectionError, RuntimeError) as e:
            raise UnavailableError(
                f"cannot reach the Ray cluster at {address!r}: {e}", address=address
            ) from e
        return ClusterInfo(address, _dashboard_url(ctx), started_here=False)
    try:
        ctx = ray.init(address="auto", **common)
        return ClusterInfo(ctx.address_info.get("gcs_address", "auto"), _dashboard_url(ctx), False)
    except ConnectionError:
        pass
    if start == "never":
        raise UnavailableError(
            "no running Ray cluster found (start one with `raymlp up` or `ray start --head`)",
            address="auto",
        )
    if start == "embedded":
        return _start_embedded(cfg, common)
    cmd = [
        _ray_cli(), "start", "--head", "--disable-usage-stats",
        f"--dashboard-host={cfg.ray.dashboard_host}", f"--dashboard-port={cfg.ray.dashboard_port}",
    ]
    if cfg.ray.num_cpus:
        cmd.append(f"--num-cpus={cfg.ray.num_cpus}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UnavailableError(
            f"`ray start --head` failed: {' | '.join(tail)}", command=" ".join(cmd)
        )
    ctx = ray.init(address="auto", **common)
    return ClusterInfo(ctx.address_info.get("gcs_address", "auto"), _dashboard_url(ctx), True)


def _start_embedded(cfg: PlatformConfig, common: dict[str, Any]) -> ClusterInfo:
    ctx = ray.init(
        address="local",
        num_cpus=cfg.ray.num_cpus,
        include_dashboard=True,
        dashboard_host=cfg.ray.dashboard_host,
        dashboard_port=cfg.ray.dashboard_port,
        **common,
    )
    return ClusterInfo(ctx.address_info.get("gcs_address", "local"), _dashboard_url(ctx), True)


# -- published platform config --------------------------------------------------------------


def published_config() -> PlatformConfig | None:
    """The config the running platform was brought up with (None if not up)."""
    from ray.experimental import internal_kv

    raw = internal_kv._internal_kv_get(_constants.PLATFORM_KV_KEY, namespace=_constants.NAMESPACE)
    if not raw:
        return None
    return PlatformConfig.model_validate(json.loads(raw))


def _publish_config(cfg: PlatformConfig) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(
        _constants.PLATFORM_KV_KEY,
        cfg.model_dump_json().encode(),
        overwrite=True,
        namespace=_constants.NAMESPACE,
    )


def _unpublish_config() -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(_constants.PLATFORM_KV_KEY, namespace=_constants.NAMESPACE)


# -- actors ---------------------------------------------------------------------------------


def _settings(cfg: PlatformConfig, spec: ActorSpec) -> Any:
    return getattr(cfg, spec.name)


def get_actor(name: str, namespace: str = _constants.NAMESPACE) -> Any | None:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def _any_platform_actor_alive(cfg: PlatformConfig) -> bool:
    return any(
        get_actor(n, cfg.ray.namespace) is not None for s in ACTOR_SPECS for n in s.names(cfg)
    )


def ensure_platform(cfg: PlatformConfig, *, timeout_s: float = 120.0) -> PlatformConfig:
    """Create every available platform actor (idempotent) and publish the config.

    If the platform is already up with another storage root, raise ConflictError rather than
    silently mixing two roots; returns the config in force.
    """
    current = published_config()
    if current is not None and _any_platform_actor_alive(current):
        if current.storage.root != cfg.storage.root:
            raise ConflictError(
                f"the platform is already up with storage root {current.storage.root!r}, not "
                f"{cfg.storage.root!r} (run `raymlp down` first)",
                running_root=current.storage.root,
                requested_root=cfg.storage.root,
            )
        cfg = current
    _publish_config(cfg)
    payload = cfg.model_dump(mode="json")
    handles = []
    for spec in available_specs():
        actor_cls = ray.remote(spec.load_class())
        opts = _settings(cfg, spec).actor
        for name in spec.names(cfg):
            options: dict[str, Any] = dict(
                name=name,
                namespace=cfg.ray.namespace,
                lifetime="detached",
                get_if_exists=True,
                max_restarts=-1,
                num_cpus=opts.num_cpus,
                max_concurrency=opts.max_concurrency,
            )
            if opts.memory_mb:
                options["memory"] = opts.memory_mb * 1024 * 1024
            if opts.resources:
                options["resources"] = dict(opts.resources)
            handles.append((name, actor_cls.options(**options).remote(payload, name)))
    deadline = time.monotonic() + timeout_s
    for name, h in handles:
        try:
            ray.get(h.ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
        except Exception as e:
            from raymlp.errors import unwrap_ray_error

            cause = unwrap_ray_error(e)
            raise UnavailableError(f"platform actor {name!r} did not start: {cause}",
                                   actor=name) from e
    return cfg


def remove_platform(namespace: str = _constants.NAMESPACE, cfg: PlatformConfig | None = None) -> list[str]:
    """Kill every platform actor (no restart); returns the names removed. Data stays in storage."""
    cfg = cfg or published_config()
    removed = []
    for spec in ACTOR_SPECS:
        for name in spec.names(cfg) if cfg is not None else [spec.name]:
            h = get_actor(name, namespace)
            if h is not None:
                ray.kill(h, no_restart=True)
                removed.append(name)
    # Shard actors of a config we no longer know: sweep by prefix via the state API.
    for row in _list_namespace_actors(namespace):
        if row.get("state") != "DEAD" and row.get("name") and row["name"] not in removed:
            h = get_actor(row["name"], namespace)
            if h is not None:
                ray.kill(h, no_restart=True)
                removed.append(row["name"])
    _unpublish_config()
    return removed


def _list_namespace_actors(namespace: str) -> list[dict[str, Any]]:
    try:
        from ray.util.state import list_actors

        rows = list_actors(filters=[("ray_namespace", "=", namespace)], detail=True, limit=1000,
                           raise_on_missing_output=False, timeout=10)
    except Exception:  # no dashboard (embedded cluster without it): fall back to pinging
        return []
    return [
        {
            "name": r.name,
            "state": r.state,
            "node_id": r.node_id,
            "pid": r.pid,
            "num_restarts": int(r.num_restarts or 0),
            "class_name": r.class_name,
        }
        for r in rows
    ]


def platform_status(cfg: PlatformConfig) -> list[dict[str, Any]]:
    """One row per expected platform actor: actor, node, state, restarts, pid."""
    by_name: dict[str, dict[str, Any]] = {}
    for row in _list_namespace_actors(cfg.ray.namespace):
        # Keep the live incarnation of a name over dead ones from earlier `up`s.
        prev = by_name.get(row["name"])
        if prev is None or prev["state"] == "DEAD":
            by_name[row["name"]] = row
    rows = []
    for spec in ACTOR_SPECS:
        for name in spec.names(cfg):
            row = by_name.get(name)
            handle = get_actor(name, cfg.ray.namespace)
            if handle is not None and (row is None or row.get("state") == "DEAD"):
                try:
                    info = ray.get(handle.info.remote(), timeout=10)
                    row = {"name": name, "state": "ALIVE", "node_id": info["node_id"],
                           "pid": info["pid"], "num_restarts": "?"}
                except Exception:
                    row = {"name": name, "state": "UNREACHABLE", "node_id": None, "pid": None,
                           "num_restarts": "?"}
            if row is None or handle is None:
                state = "NOT BUILT" if not spec.is_available() else "ABSENT"
                row = {"name": name, "state": state, "node_id": None, "pid": None,
                       "num_restarts": 0}
            rows.append(
                {
                    "actor": name,
                    "node": (row.get("node_id") or "-")[:12],
                    "state": row["state"],
                    "restarts": row.get("num_restarts", 0),
                    "pid": row.get("pid") or "-",
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def stop_local_cluster() -> None:
    """`ray stop` for a cluster this machine started (used by `raymlp down --stop-cluster`)."""
    if ray.is_initialized():
        ray.shutdown()
    subprocess.run([_ray_cli(), "stop"], capture_output=True, text=True)
