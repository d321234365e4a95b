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
from raymlp._private.serve_ingress import (
    INGRESS_KV_KEY,
    apply_env,
    cluster_env,
    ingress_mode,
    merged_env,
    running_ingress,
)
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
    #: Serve's HTTP ingress as far as this process knows (``haproxy`` | ``proxy``): chosen by
    #: ``ray.serve_ingress`` for a cluster started here, else what the environment says
    ingress: str = "proxy"


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


# -- is anything there? ----------------------------------------------------------------------

#: The port of Ray's client server when a ``ray://host`` address names none.
_RAY_CLIENT_DEFAULT_PORT = 10001


@dataclass(frozen=True)
class Probe:
    """What a TCP connect to a cluster address found: ``alive``, else ``reason`` says why not."""

    address: str
    alive: bool
    reason: str = ""


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port``, ``[v6]:port`` or ``ray://host[:port]``; None when the
    address names no TCP endpoint raymlp knows how to probe (another scheme without a port)."""
    scheme, sep, rest = address.strip().rpartition("://")
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    elif rest.count(":") == 1:
        host, _, port = rest.partition(":")
    else:
        host, port = rest, ""
    if not port and sep and scheme == "ray":
        port = str(_RAY_CLIENT_DEFAULT_PORT)
    if not host or not port.isdigit():
        return None
    return host, int(port)


def probe(address: str, timeout_s: float | None = None) -> Probe:
    """Whether something accepts a TCP connection at ``address`` within ``timeout_s`` seconds
    (default ``RAYMLP_PROBE_TIMEOUT_S``, 3).

    Ray keeps retrying a dead GCS for minutes; this answers in at most ``timeout_s`` (a refused
    connection at once). ``address`` is ``host:port`` or ``ray://host[:port]``; one without a
    TCP endpoint to try (another scheme) counts as alive, and Ray decides.
    """
    timeout = _constants.cluster_probe_timeout_s() if timeout_s is None else timeout_s
    endpoint = _host_port(address)
    if endpoint is None:
        if "://" in address:
            return Probe(address, True, "not probed")
        return Probe(address, False, "not a host:port address")
    try:
        with socket.create_connection(endpoint, timeout=timeout):
            return Probe(address, True)
    except ConnectionRefusedError:
        return Probe(address, False, "connection refused")
    except TimeoutError:
        return Probe(address, False, f"no answer within {timeout:g} s")
    except socket.gaierror:
        return Probe(address, False, f"host {endpoint[0]!r} not found")
    except (OSError, ValueError) as e:
        return Probe(address, False, getattr(e, "strerror", None) or e.__class__.__name__)


# -- which cluster `auto` means ---------------------------------------------------------------


@dataclass(frozen=True)
class AutoCluster:
    """What ``auto`` finds on this machine: the ``address`` of a cluster that answers, or None
    (start one); ``stale`` says, in one line, which cluster ``auto`` names but is not answering."""

    address: str | None
    stale: str | None = None


def _recorded_cluster_file() -> Path:
    """Where ``ray start`` records the machine's current cluster (``ray stop`` removes it):
    ``ray_current_cluster`` in Ray's default temp dir (``$RAY_TMPDIR/ray``, else ``/tmp/ray``)."""
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(None))


def _recorded_cluster() -> str | None:
    try:
        return _recorded_cluster_file().read_text().strip() or None
    except OSError:
        return None


def _running_gcs_addresses() -> list[str]:
    """GCS addresses named by the raylets running on this machine (Ray's own process scan)."""
    from ray._private import services

    clear = getattr(services.find_gcs_addresses, "cache_clear", None)
    if clear is not None:  # the scan caches what it found
        clear()
    return sorted(services.find_gcs_addresses())


def find_auto_cluster(timeout_s: float | None = None) -> AutoCluster:
    """Resolve ``auto`` like Ray does, but never to a cluster that does not answer.

    The cluster recorded by the last ``ray start`` (``ray_current_cluster``) comes first — Ray's
    documented order; when it does not answer (an unclean death leaves the record behind) ``auto``
    means "no cluster", with a ``stale`` note, rather than minutes of Ray retrying it. Without a
    record, a GCS named by a raylet running on this machine (Ray's legacy fallback) that answers.
    Every probe together takes at most about ``timeout_s`` (default ``RAYMLP_PROBE_TIMEOUT_S``).
    """
    timeout = _constants.cluster_probe_timeout_s() if timeout_s is None else timeout_s
    recorded = _recorded_cluster()
    if recorded is not None:
        found = probe(recorded, timeout)
        if found.alive:
            return AutoCluster(recorded)
        return AutoCluster(
            None,
            f"the Ray cluster recorded at {recorded} "
            f"({_recorded_cluster_file()}) is not answering ({found.reason})",
        )
    deadline = time.monotonic() + timeout
    dead: list[Probe] = []
    for address in _running_gcs_addresses():
        found = probe(address, max(0.05, deadline - time.monotonic()))
        if found.alive:
            return AutoCluster(address)
        dead.append(found)
    if dead:
        return AutoCluster(
            None,
            f"the Ray cluster at {dead[0].address} (named by a raylet on "
            f"this machine) is not answering ({dead[0].reason})",
        )
    return AutoCluster(None)


def _requested_address(cfg: PlatformConfig, address: str | None) -> tuple[str, str]:
    """The address to use and what named it: the argument, ``RAYMLP_ADDRESS``, ``RAY_ADDRESS``,
    then ``ray.address`` of the config. Like Ray, a set ``RAY_ADDRESS`` replaces ``auto``."""
    if address:
        value, source = address.strip(), "the address argument"
    elif (setting := _constants.ray_address_setting()) is not None:
        value, source = setting
    else:
        value, source = cfg.ray.address, "ray.address of the platform config"
    env = _constants.ray_env_address()
    if value == "auto" and env is not None and env != "auto":
        value, source = env, "RAY_ADDRESS"
    return value, source


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
    """Join the cluster at ``address`` (default: ``RAYMLP_ADDRESS``, then ``RAY_ADDRESS``, then
    ``cfg.ray.address``).

    ``auto`` joins a running cluster if there is one (see :func:`find_auto_cluster`); if none
    answers, ``start`` decides: ``embedded`` starts Ray inside this process (it stops with it),
    ``persistent`` runs ``ray start --head`` (it outlives this process, e.g. for ``raymlp up``),
    ``never`` raises UnavailableError. A recorded cluster that is not answering is passed over
    with one warning line saying so. An explicit address (``host:port``, ``ray://...``, or a
    ``RAY_ADDRESS`` that replaces ``auto``) that accepts no connection within
    ``RAYMLP_PROBE_TIMEOUT_S`` raises UnavailableError at once: it is never replaced.
    """
    if ray.is_initialized():
        runtime = ray.get_runtime_context()
        return ClusterInfo(runtime.gcs_address, _dashboard_url(None), started_here=False)
    address, source = _requested_address(cfg, address)
    ns = cfg.ray.namespace
    common: dict[str, Any] = dict(
        namespace=ns,
        logging_level=logging.WARNING,
        configure_logging=True,
        log_to_driver=cfg.ray.log_to_driver,
    )
    if address == "local":
        if start == "persistent":
            return _start_persistent(cfg, common, fixed_ports=False)
        return _start_embedded(cfg, common)
    if address != "auto":
        return _join_explicit(address, source, common)
    found = find_auto_cluster()
    stale = found.stale
    if found.address is not None:
        try:
            _use_local_auth_token()  # what ray.init(address="auto") does for a local cluster
            ctx = cast("RayContext", ray.init(address=found.address, **common))
            gcs = cast(str, ctx.address_info.get("gcs_address", found.address))
            return ClusterInfo(gcs, _dashboard_url(ctx), False)
        except (ConnectionError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
            stale = f"the Ray cluster at {found.address} could not be joined ({first})"
    if start == "never":
        raise UnavailableError(
            f"{stale or 'no running Ray cluster found'} "
            "(start one with `raymlp up` or `ray start --head`)",
            address="auto",
        )
    if stale:
        instead = (
            "an embedded Ray cluster (it stops with this process)"
            if start == "embedded"
            else "a local Ray cluster (`ray start --head`)"
        )
        logger.warning("raymlp: %s; starting %s instead", stale, instead)
    if start == "embedded":
        return _start_embedded(cfg, common)
    return _start_persistent(cfg, common, fixed_ports=True)


def _join_explicit(address: str, source: str, common: dict[str, Any]) -> ClusterInfo:
    """Join a named cluster, or fail in seconds with one line (never start another)."""
    timeout = _constants.cluster_probe_timeout_s()
    found = probe(address, timeout)
    rule = f"an explicit Ray address must accept a connection within {timeout:g} s"
    if not found.alive:
        raise UnavailableError(
            f"no Ray cluster answers at {address!r} (from {source}): {found.reason}; {rule} "
            "(start that cluster, or use address 'auto' to join or start a local one)",
            address=address,
            source=source,
            reason=found.reason,
            rule=rule,
        )
    if not address.startswith("ray://"):
        _use_local_auth_token()
    try:
        ctx = ray.init(address=address, **common)
    except (ConnectionError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        raise UnavailableError(
            f"cannot join the Ray cluster at {address!r} (from {source}): {first}",
            address=address,
            source=source,
        ) from e
    return ClusterInfo(address, _dashboard_url(ctx), started_here=False)


def _free_port() -> int:
    # Outside 10002-19999, which Ray keeps for worker processes by default.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


def _start_persistent(
    cfg: PlatformConfig, common: dict[str, Any], *, fixed_ports: bool
) -> ClusterInfo:
    """`ray start --head` in the background. With ``fixed_ports`` False every port is picked
    free, so a second cluster can start beside one that already runs (tests, `--address local`)."""
    gcs_port = 6379 if fixed_ports else _free_port()
    dash_port = cfg.ray.dashboard_port if fixed_ports else _free_port()
    cmd = [
        _ray_cli(),
        "start",
        "--head",
        "--disable-usage-stats",
        f"--port={gcs_port}",
        f"--dashboard-host={cfg.ray.dashboard_host}",
        f"--dashboard-port={dash_port}",
    ]
    if not fixed_ports:
        # Ray's client server and the dashboard agent default to fixed ports; move them too.
        cmd += [
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ]
    if cfg.ray.num_cpus:
        cmd.append(f"--num-cpus={cfg.ray.num_cpus}")
    _ensure_local_auth_token()
    # Serve's ingress is read by every Ray process at import: the cluster's environment
    # chooses it (the user's own RAY_SERVE_* settings win)
    env = merged_env(cluster_env(ingress_mode(cfg), free_port=None if fixed_ports else _free_port))
    ingress = running_ingress(env)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
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
    _record_ingress(ingress, cfg)
    return ClusterInfo(gcs, _dashboard_url(ctx), True, ingress)


def _record_ingress(ingress: str, cfg: PlatformConfig) -> None:
    """Say in the cluster's KV which Serve ingress it was started with: a later `raymlp
    serve deploy` from another process refuses TLS on HAProxy (serving.deploy)."""
    from ray.experimental import internal_kv

    try:
        internal_kv._internal_kv_put(
            INGRESS_KV_KEY, ingress.encode(), overwrite=True, namespace=cfg.ray.namespace
        )
    except Exception as e:  # noqa: BLE001 - an advisory record
        logger.warning("raymlp: could not record the Serve ingress: %s", e)


def _start_embedded(cfg: PlatformConfig, common: dict[str, Any]) -> ClusterInfo:
    # ray.init() makes a missing token itself, but always at ~/.ray/auth_token: with
    # RAY_AUTH_TOKEN_PATH set to a file not yet written it would then fail to read it back.
    _ensure_local_auth_token()
    # The raylet copies this process's environment, and every Ray process reads Serve's
    # ingress from it at import. Side ports free: an embedded cluster may run beside another.
    apply_env(cluster_env(ingress_mode(cfg), free_port=_free_port))
    # address="local": a new local cluster, whose context is a RayContext (see above).
    ctx = cast(
        "RayContext",
        ray.init(
            address="local",
            num_cpus=cfg.ray.num_cpus,
            include_dashboard=True,
            dashboard_host=cfg.ray.dashboard_host,
            dashboard_port=cfg.ray.dashboard_port,
            **common,
        ),
    )
    gcs = cast(str, ctx.address_info.get("gcs_address", "local"))
    ingress = running_ingress()
    _record_ingress(ingress, cfg)
    return ClusterInfo(gcs, _dashboard_url(ctx), True, ingress)


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
            raise UnavailableError(
                f"platform actor {name!r} did not start: {cause}", actor=name
            ) from e
    return cfg


def remove_platform(
    namespace: str = _constants.NAMESPACE, cfg: PlatformConfig | None = None
) -> list[str]:
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
        rows = list_actors(
            address=address,
            filters=[("ray_namespace", "=", namespace)],
            detail=True,
            limit=1000,
            raise_on_missing_output=False,
            timeout=10,
        )
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
                    row = {
                        "name": name,
                        "state": "ALIVE",
                        "node_id": info["node_id"],
                        "pid": info["pid"],
                        "num_restarts": restarts,
                    }
                except Exception:
                    state = row.get("state", "UNREACHABLE") if row else "UNREACHABLE"
                    row = {
                        "name": name,
                        "state": state,
                        "node_id": None,
                        "pid": None,
                        "num_restarts": "?",
                    }
            if row is None or handle is None:
                row = {
                    "name": name,
                    "state": "ABSENT",
                    "node_id": None,
                    "pid": None,
                    "num_restarts": 0,
                }
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
    names = _own_gcs_addresses(node)
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
    if procs:
        _forget_recorded_cluster(names)
    return bool(procs)


def _own_gcs_addresses(node: Any) -> set[str]:
    """The ways ``host:port`` may name the GCS of the cluster this driver joined."""
    if node is None:
        return set()
    try:
        host, _, port = str(node.gcs_address).rpartition(":")
        ip = node.node_ip_address
    except Exception:  # noqa: BLE001 - no GCS address known: nothing to compare with
        return set()
    return {f"{h}:{port}" for h in (host, ip, "127.0.0.1", "localhost") if h}


def _forget_recorded_cluster(names: set[str]) -> None:
    """Remove ``ray_current_cluster`` when it records the cluster just stopped — what
    ``ray stop`` does — so that ``auto`` does not keep naming a dead cluster."""
    if _recorded_cluster() in names:
        _recorded_cluster_file().unlink(missing_ok=True)
