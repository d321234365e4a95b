"""Cluster lifecycle: join or start Ray, create/remove the platform actors, report their status.

Used by ``raymlp up|down|status`` and by :func:`raymlp.connect`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import ray

from actors import ACTOR_SPECS, ActorSpec
from raymlp import _constants
from raymlp._private.credentials import PlatformSecret
from raymlp._private.rpc import published_config
from raymlp.config import PlatformConfig
from raymlp.errors import ConflictError, UnavailableError

if TYPE_CHECKING:
    from ray._private.worker import RayContext

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


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at ``host:port``
    (Ray itself keeps retrying the GCS for a long time)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as e:
        raise UnavailableError(
            f"no Ray cluster answers at {address!r} ({e.__class__.__name__})", address=address
        ) from None


def _use_local_auth_token() -> None:
    """Send this machine's Ray auth token when joining a cluster by explicit address.

    Ray 2.60 enables token auth for clusters it starts, but only auto-detected addresses pick up
    the local token (~/.ray/auth_token); an explicit ``host:port`` would be refused.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # older/newer Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _ensure_local_auth_token() -> None:
    """Create this machine's Ray auth token before a cluster starts in token mode.

    ``ray.init()`` generates a missing token for the clusters it starts, but ``ray start`` with
    ``RAY_AUTH_MODE=token`` refuses to start without one — so on a fresh machine (empty home
    directory) ``raymlp up`` would fail. Written where Ray reads it: ``RAY_AUTH_TOKEN_PATH`` if
    set, else ``~/.ray/auth_token`` (mode 0600).
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return
    try:
        from ray._private.authentication.authentication_token_generator import (
            generate_new_authentication_token,
        )
    except ImportError:  # older/newer Ray without token auth
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if path.exists() and path.read_text().strip():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generate_new_authentication_token())


def init_ray(
    cfg: PlatformConfig, address: str | None = None, *, start: StartMode = "embedded"
) -> ClusterInfo:
    """Join the cluster at ``address`` (default: ``RAYMLP_ADDRESS``, then ``cfg.ray.address``).

    ``auto`` joins a running cluster if there is one; if none runs, ``start`` decides: ``embedded``
    starts Ray inside this process (it stops with it), ``persistent`` runs ``ray start --head`` (it
    outlives this process, e.g. for ``raymlp up``), ``never`` raises UnavailableError.
    """
    if ray.is_initialized():
        runtime = ray.get_runtime_context()
        return ClusterInfo(runtime.gcs_address, _dashboard_url(None), started_here=False)
    address = address or _constants.ray_address() or cfg.ray.address
    ns = cfg.ray.namespace
    common: dict[str, Any] = dict(
        namespace=ns, logging_level=logging.WARNING, configure_logging=True,
        log_to_driver=cfg.ray.log_to_driver,
    )
    if address == "local":
        if start == "persistent":
            return _start_persistent(cfg, common, fixed_ports=False)
        return _start_embedded(cfg, common)
    if address != "auto":
        if not address.startswith("ray://"):
            _check_reachable(address)
            _use_local_auth_token()
        try:
            ctx = ray.init(address=address, **common)
        except (ConnectionError, RuntimeError) as e:
            raise UnavailableError(
                f"cannot reach the Ray cluster at {address!r}: {e}", address=address
            ) from e
        return ClusterInfo(address, _dashboard_url(ctx), started_here=False)
    try:
        ctx = ray.init(address="auto", **common)
        # A RayContext, except when RAY_ADDRESS is ray://... (Ray then makes "auto" a client
        # connection, a ClientContext without address_info): AttributeError, not handled.
        gcs = ctx.address_info.get("gcs_address", "auto")  # type: ignore[attr-defined]
        return ClusterInfo(gcs, _dashboard_url(ctx), False)
    except ConnectionError:
        pass
    if start == "never":
        raise UnavailableError(
            "no running Ray cluster found (start one with `raymlp up` or `ray start --head`)",
            address="auto",
        )
    if start == "embedded":
        return _start_embedded(cfg, common)
    return _start_persistent(cfg, common, fixed_ports=True)


def _free_port() -> int:
    # Outside 10002-19999, which Ray keeps for worker processes by default.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


def _start_persistent(cfg: PlatformConfig, common: dict[str, Any], *, fixed_ports: bool) -> ClusterInfo:
    """`ray start --head` in the background. With ``fixed_ports`` False every port is picked
    free, so a second cluster can start beside one that already runs (tests, `--address local`)."""
    gcs_port = 6379 if fixed_ports else _free_port()
    dash_port = cfg.ray.dashboard_port if fixed_ports else _free_port()
    cmd = [
        _ray_cli(), "start", "--head", "--disable-usage-stats",
        f"--port={gcs_port}",
        f"--dashboard-host={cfg.ray.dashboard_host}", f"--dashboard-port={dash_port}",
    ]
    if not fixed_ports:
        # Ray's client server and the dashboard agent default to fixed ports; move them too.
        cmd += [f"--ray-client-server-port={_free_port()}",
                f"--dashboard-agent-listen-port={_free_port()}",
                f"--metrics-export-port={_free_port()}"]
    if cfg.ray.num_cpus:
        cmd.append(f"--num-cpus={cfg.ray.num_cpus}")
    _ensure_local_auth_token()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UnavailableError(
            f"`ray start --head` failed: {' | '.join(tail)}", command=" ".join(cmd)
        )
    address = f"127.0.0.1:{gcs_port}"
    _use_local_auth_token()
    # A host:port address (not ray://): a driver connection, whose context is a RayContext;
    # its address_info holds the connected GCS address (a str).
    ctx = cast("RayContext", ray.init(address=address, **common))
    gcs = cast(str, ctx.address_info.get("gcs_address", address))
    return ClusterInfo(gcs, _dashboard_url(ctx), True)


def _start_embedded(cfg: PlatformConfig, common: dict[str, Any]) -> ClusterInfo:
    # ray.init() makes a missing token itself, but always at ~/.ray/auth_token: with
    # RAY_AUTH_TOKEN_PATH set to a file not yet written it would then fail to read it back.
    _ensure_local_auth_token()
    # address="local": a new local cluster, whose context is a RayContext (see above).
    ctx = cast("RayContext", ray.init(
        address="local",
        num_cpus=cfg.ray.num_cpus,
        include_dashboard=True,
        dashboard_host=cfg.ray.dashboard_host,
        dashboard_port=cfg.ray.dashboard_port,
        **common,
    ))
    gcs = cast(str, ctx.address_info.get("gcs_address", "local"))
    return ClusterInfo(gcs, _dashboard_url(ctx), True)


# -- published platform config --------------------------------------------------------------


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


def _running_actor_config(cfg: PlatformConfig) -> PlatformConfig | None:
    h = get_actor("registry", cfg.ray.namespace)
    if h is None:
        return None
    try:
        return PlatformConfig.model_validate(ray.get(h.platform_config.remote(), timeout=30))
    except Exception:  # noqa: BLE001 - an older or restarting registry: fall back to the KV
        return None


def ensure_platform(
    cfg: PlatformConfig, *, timeout_s: float = 120.0, explicit: bool = True
) -> PlatformConfig:
    """Create every available platform actor (idempotent) and publish the config.

    When the platform is already up, its published config is the one in force. If the caller
    named a config explicitly (``explicit``) whose storage root differs, raise ConflictError
    rather than silently mixing two roots; a default config (e.g. a job's working directory's
    configs/platform.yaml) simply joins. Returns the config in force.
    """
    current = published_config()
    if current is not None and _any_platform_actor_alive(current):
        if explicit and current.storage.root != cfg.storage.root:
            raise ConflictError(
                f"the platform is already up with storage root {current.storage.root!r}, not "
                f"{cfg.storage.root!r} (run `raymlp down` first)",
                running_root=current.storage.root,
                requested_root=cfg.storage.root,
            )
        # The running actors' own config is the one in force: the KV copy is only a pointer
        # (any driver can rewrite it), so it never decides auth.
        cfg = _running_actor_config(current) or current
    # Service tokens are signed with it: it exists before the first actor needs it.
    PlatformSecret.ensure(cfg)
    _publish_config(cfg)
    payload = cfg.model_dump(mode="json")
    handles = []
    for spec in sorted(ACTOR_SPECS, key=lambda s: s.start_order):
        actor_cls: Any = ray.remote(spec.load_class())  # an ActorClass of the loaded class
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

        # Name the cluster we are connected to: with several on one machine, the state API
        # would otherwise pick one by itself.
        address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
        rows = list_actors(address=address, filters=[("ray_namespace", "=", namespace)],
                           detail=True, limit=1000, raise_on_missing_output=False, timeout=10)
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
    row: dict[str, Any] | None
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
            # The state API lags behind: an actor that answers is alive whatever it says.
            if handle is not None and (row is None or row.get("state") != "ALIVE"):
                try:
                    info = ray.get(handle.info.remote(), timeout=10)
                    restarts = row.get("num_restarts", "?") if row else "?"
                    row = {"name": name, "state": "ALIVE", "node_id": info["node_id"],
                           "pid": info["pid"], "num_restarts": restarts}
                except Exception:
                    state = row.get("state", "UNREACHABLE") if row else "UNREACHABLE"
                    row = {"name": name, "state": state, "node_id": None, "pid": None,
                           "num_restarts": "?"}
            if row is None or handle is None:
                row = {"name": name, "state": "ABSENT", "node_id": None, "pid": None,
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


def stop_local_cluster(grace_s: float = 10.0) -> bool:
    """Stop the Ray cluster this driver is connected to, if its processes run on this machine.

    Unlike `ray stop`, only that cluster's processes (found by its session directory) are ended,
    so other clusters on the machine keep running. Returns whether anything was stopped.
    """
    import psutil

    node = getattr(ray._private.worker, "_global_node", None)
    session_dir = node.get_session_dir_path() if node is not None else None
    if ray.is_initialized():
        ray.shutdown()
    if not session_dir:
        return False
    marker = Path(session_dir).name
    procs = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                procs.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return bool(procs)
