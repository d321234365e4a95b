"""Chaos plumbing shared by ``bench/chaos.py`` and ``tests/chaos``: a served platform on the
current Ray cluster, a bounded HTTP load on loopback that records every answer, background
writers whose acknowledged writes are checked afterwards, SIGKILL helpers for platform actors
and Serve replicas, and a real Prometheus scraping the monitor.

Nothing here asserts: callers measure with these helpers, then decide (tests assert, the bench
reports). Everything runs on the local machine (loopback only).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

KEY = "key-ops"
MODEL = "churn"
ONLINE = "churn-online"
VIEW = "cust"
NAMESPACE = "raymlp"
PLATFORM_ACTORS = ("feature_store", "registry", "monitor")
CANARY_WEIGHT = 25.0
#: every ``ENTITY_EVERY``-th request of the load is an entity request (online features)
ENTITY_EVERY = 5


def free_port() -> int:
    """A free loopback port outside Ray's worker port range (10002-19999)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not 10002 <= port < 20000:
            return port
    raise RuntimeError("no free port outside Ray's worker range")


def wait_until(
    cond: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll ``cond`` (exceptions count as "not yet") until truthy; raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = cond()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - not yet
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# -- the served platform ------------------------------------------------------------------------


def platform_config(root: str | Path, *, auto_rollback: bool = True) -> Any:
    """Auth on, platform actors pinned to the head node (a worker raylet may die), the monitor
    evaluating canaries every 2 s with auto rollback on (an infrastructure fault must not roll
    the canary back) and auto advance off (the weight must stay where the test put it)."""
    from raymlp.config import PlatformConfig, hash_api_key

    head = {"resources": {"head": 0.001}}
    return PlatformConfig.model_validate(
        {
            "storage": {"root": str(root)},
            "feature_store": {"actor": head},
            "registry": {"approval_required": False, "actor": head},
            "monitor": {
                "actor": head,
                "evaluate_interval_s": 2.0,
                "monitoring": {
                    "canary": {
                        "auto_rollback": auto_rollback,
                        "auto_advance": False,
                        "min_requests": 30,
                        "min_stable_requests": 20,
                        # canary and stable are the same network: only an error-rate or drift
                        # regression is a model verdict; p99 on 2 busy cores is noise.
                        "max_p99_ratio": 50.0,
                    }
                },
            },
            "auth": {
                "tenants": [{"name": "acme"}],
                "principals": [
                    {
                        "name": "ops",
                        "tenant": "acme",
                        "roles": ["admin"],
                        "api_key_sha256": hash_api_key(KEY),
                    },
                    {"name": "serving", "tenant": "acme", "roles": ["admin"]},
                    {"name": "monitor", "tenant": "acme", "roles": ["admin"]},
                ],
                "default_principal": "ops",
            },
        }
    )


def app_config(port: int, *, gateway_replicas: int = 2, model_replicas: int = 2) -> dict:
    """The served application: churn (stable v1 + a 25 % canary v2 of the same network, a
    fallback model, a rule and a default answer) and churn-online (features from the store,
    a default answer when the store cannot answer). Cache off: every request reaches a model."""
    return {
        "name": "chaos",
        "principal": "serving",
        "http": {"host": "127.0.0.1", "port": port},
        "models": [
            {
                "name": MODEL,
                "default_response": {"prediction": "stay", "probability": 0.3},
            },
            {
                "name": ONLINE,
                "entity_keys": ["customer_id"],
                "default_response": {"prediction": "stay", "probability": 0.3},
            },
        ],
        "gateway": {
            "num_replicas": gateway_replicas,
            "num_cpus": 0,
            "max_inflight": 64,
            "refresh_interval_s": 5,
        },
        "model_server": {
            "num_replicas": model_replicas,
            "num_cpus": 0,
            "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.005},
        },
        "fallback_server": {"num_replicas": 1, "num_cpus": 0},
        "cache": {"enabled": False},
        "timeouts": {"primary_s": 1.0, "fallback_s": 1.0, "warmup_s": 60},
        "breaker": {"consecutive_failures": 3, "cooldown_s": 1.0, "window_s": 10},
        "prediction_log": {"enabled": True, "flush_interval_s": 0.5},
    }


@dataclass
class ChaosApp:
    """Handles on the running platform and application."""

    p: Any
    url: str
    cfg: Any
    tmp: Path

    def headers(self) -> dict[str, str]:
        return {"x-api-key": KEY}

    def traffic(self) -> dict[str, Any]:
        return self.p.registry.get_traffic(MODEL)

    def close(self) -> None:
        from ray import serve

        from raymlp._private import cluster as cluster_lib

        self.p.registry.close()  # its watcher thread, before the cluster goes
        serve.shutdown()
        cluster_lib.remove_platform(self.cfg.ray.namespace, self.cfg)


def start_app(
    tmp: Path,
    *,
    gateway_replicas: int = 2,
    model_replicas: int = 2,
    auto_rollback: bool = True,
) -> ChaosApp:
    """The platform and the application up on the current Ray cluster, a 25 % canary set."""
    from ray import serve

    from raymlp.client import connect
    from raymlp.predictor.artifact import read_json
    from raymlp.serving.examples import example_features, make_artifact

    cfg = platform_config(tmp / "root", auto_rollback=auto_rollback)
    p = connect(config=cfg, api_key=KEY)
    refs = {
        c: f"{VIEW}:{c}" for c in ("tenure_months", "monthly_charges", "contract", "support_calls")
    }
    arts = {
        # v1 and v2: the same network (seed), so the canary holds on its merits
        "v1": make_artifact(tmp / "v1", seed=1, hidden_dims=[16]),
        "v2": make_artifact(tmp / "v2", seed=1, hidden_dims=[16]),
        "fb": make_artifact(tmp / "fb", seed=9, hidden_dims=[]),
        "online": make_artifact(tmp / "online", seed=6, feature_refs=refs),
    }
    sig = read_json(arts["v1"], "signature")
    reg = p.registry
    fb = reg.register("churn-fallback", arts["fb"], signature=sig)
    lineage = {"fallback_model": {"name": "churn-fallback", "version": fb}}
    reg.register(MODEL, arts["v1"], signature=sig, lineage=lineage)
    reg.register(MODEL, arts["v2"], signature=sig, lineage=lineage)
    reg.promote(MODEL, 1, "production")
    reg.register(ONLINE, arts["online"], signature=sig, lineage=lineage)
    reg.promote(ONLINE, 1, "production")
    p.features.apply(
        {
            "entities": [{"name": "customer", "join_keys": ["customer_id"]}],
            "feature_views": [
                {
                    "name": VIEW,
                    "entities": ["customer"],
                    "schema": [
                        {"name": "tenure_months", "dtype": "int64"},
                        {"name": "monthly_charges", "dtype": "float64"},
                        {"name": "contract", "dtype": "string"},
                        {"name": "support_calls", "dtype": "int64"},
                    ],
                }
            ],
        }
    )
    p.features.push(
        VIEW,
        [
            {"customer_id": f"c{i}", "event_timestamp": datetime.now(UTC), **example_features(i)}
            for i in range(40)
        ],
    )
    port = free_port()
    # HeadOnly: the raylets of a local Cluster share one host, so one proxy owns the port.
    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": "127.0.0.1", "port": port},
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    url = p.serve.deploy(
        app_config(port, gateway_replicas=gateway_replicas, model_replicas=model_replicas)
    )
    p.serve.canary(MODEL, 2, CANARY_WEIGHT, steps=[CANARY_WEIGHT, 100.0], app="chaos")
    return ChaosApp(p=p, url=url.rstrip("/"), cfg=cfg, tmp=tmp)


# -- the load -----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One request of the load and what came back."""

    t_sent: float  # time.time() when sent
    latency: float  # seconds
    status: int  # 0: no HTTP answer (connection error)
    content_type: str
    model: str
    body: dict[str, Any]
    route: str | None = None
    request_id: str | None = None
    code: str | None = None  # error.code, or the raw text when the error is not our schema
    schema_ok: bool = True  # an error answer in {"error": {"code", "message", "details"}}


def in_schema(payload: Any) -> bool:
    """``{"error": {"code", "message", "details"}}`` (our error schema)."""
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("error"), dict)
        and {"code", "message", "details"} <= set(payload["error"])
    )


def body_for(i: int) -> dict[str, Any]:
    """Request ``i`` of the load: fresh features every time (never the same input twice)."""
    from raymlp.serving.examples import example_features

    if i % ENTITY_EVERY == 0:
        return {
            "model_id": ONLINE,
            "entity": {"customer_id": f"c{i % 40}"},
            "features": {"support_calls": i},
        }
    return {"model_id": MODEL, "features": example_features(1_000_000 + i)}


def send(client: httpx.Client, body: dict[str, Any]) -> Sample:
    """POST one prediction request; record everything about the answer."""
    t0, m0 = time.time(), time.perf_counter()
    try:
        r = client.post("/v1/predictions", json=body, headers={"x-api-key": KEY})
    except httpx.HTTPError as e:
        return Sample(t0, time.perf_counter() - m0, 0, "", body["model_id"], body,
                      code=f"{type(e).__name__}: {e}", schema_ok=False)
    s = Sample(t0, time.perf_counter() - m0, r.status_code,
               r.headers.get("content-type", ""), body["model_id"], body)
    try:
        payload = r.json()
    except ValueError:
        payload = None
    if r.status_code == 200 and isinstance(payload, dict):
        s.route, s.request_id = payload.get("route"), payload.get("request_id")
    elif in_schema(payload):
        s.code = payload["error"]["code"]
        s.request_id = (payload["error"].get("details") or {}).get("request_id")
    else:
        s.code, s.schema_ok = r.text[:200], False
    return s


class Load:
    """``clients`` threads posting back-to-back requests to ``url`` until :meth:`stop`."""

    def __init__(self, url: str, clients: int = 4, pause_s: float = 0.0) -> None:
        self.url, self.clients, self.pause_s = url, clients, pause_s
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._n = 0
        self._threads: list[threading.Thread] = []

    def _next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                s = send(c, body_for(self._next()))
                with self._lock:
                    self.samples.append(s)
                if self.pause_s:
                    self._stop.wait(self.pause_s)

    def start(self) -> Load:
        for k in range(self.clients):
            t = threading.Thread(target=self._loop, name=f"chaos-load-{k}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return self.snapshot()

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def first_primary_after(self, t: float, timeout: float) -> float | None:
        """Seconds from ``t`` to the first answer sent after ``t`` with route primary."""
        def found() -> float | None:
            hits = [s.t_sent for s in self.snapshot() if s.t_sent >= t and s.route == "primary"]
            return min(hits) - t if hits else None

        try:
            return wait_until(found, timeout, 0.05, "a primary answer")
        except TimeoutError:
            return None


# -- acknowledged writes during a fault -------------------------------------------------------


class Writers:
    """Background writers through the SDK every ``interval_s``: a registry event
    (``record_event``) and a feature row (``features.push``) each; only acknowledged writes are
    remembered, and :meth:`lost` reads them all back."""

    def __init__(self, p: Any, tag: str, interval_s: float = 0.3) -> None:
        self.p, self.tag, self.interval_s = p, tag, interval_s
        self.events: list[int] = []
        self.rows: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._events, daemon=True),
            threading.Thread(target=self._features, daemon=True),
        ]

    def _events(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                self.p.registry.record_event(
                    "monitor_alert", MODEL, {"chaos": self.tag, "n": i}
                )
                self.events.append(i)
            except Exception as e:  # noqa: BLE001 - not acknowledged: not expected back
                self.failures.append(f"record_event: {type(e).__name__}: {e}")
            self._stop.wait(self.interval_s)

    def _features(self) -> None:
        from raymlp.serving.examples import example_features

        i = 0
        while not self._stop.is_set():
            i += 1
            key = f"{self.tag}-{i}"
            try:
                self.p.features.push(
                    VIEW,
                    [{"customer_id": key, "event_timestamp": datetime.now(UTC),
                      **example_features(i)}],
                )
                self.rows.append(key)
            except Exception as e:  # noqa: BLE001
                self.failures.append(f"push: {type(e).__name__}: {e}")
            self._stop.wait(self.interval_s)

    def start(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def lost(self) -> dict[str, list[Any]]:
        """Acknowledged writes that cannot be read back: ``{"events": [n], "rows": [key]}``."""
        seen = {
            (e.get("payload") or {}).get("n")
            for e in self.p.registry.events(kinds=["monitor_alert"])
            if (e.get("payload") or {}).get("chaos") == self.tag
        }
        got = self.p.features.get_online_features(
            [{"customer_id": k} for k in self.rows], [f"{VIEW}:tenure_months"]
        )
        missing_rows = [
            k for k, row in zip(self.rows, got, strict=True)
            if row["_status"][f"{VIEW}__tenure_months"] != "present"
        ]
        return {"events": [n for n in self.events if n not in seen], "rows": missing_rows}


# -- killing ------------------------------------------------------------------------------------


@dataclass
class Victim:
    """An actor picked for a kill."""

    name: str
    class_name: str
    pid: int
    node_id: str
    actor_id: str


def alive_actors() -> list[Any]:
    from ray.util.state import list_actors

    return list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=10_000)


def find(name: str | None = None, deployment: str | None = None) -> list[Victim]:
    """Live actors named ``name`` (namespace raymlp), or replicas of Serve ``deployment``."""
    out = []
    for a in alive_actors():
        cls = a.class_name or ""
        if name is not None and (a.name != name or a.ray_namespace != NAMESPACE):
            continue
        if deployment is not None and not (
            cls.startswith("ServeReplica:") and cls.endswith(f":{deployment}")
        ):
            continue
        if a.pid:
            out.append(Victim(a.name or "", cls, int(a.pid), a.node_id or "", a.actor_id))
    return out


def sigkill(v: Victim) -> float:
    """SIGKILL the actor's process; returns ``time.time()`` of the kill."""
    t = time.time()
    os.kill(v.pid, signal.SIGKILL)
    return t


def actor_back(v: Victim, timeout: float) -> float | None:
    """Seconds until an actor of the same name (platform actor) or deployment (replica count
    restored) is ALIVE in a new process; None if not within ``timeout``."""
    t0 = time.time()

    def back() -> bool:
        if v.class_name.startswith("ServeReplica:"):
            dep = v.class_name.rsplit(":", 1)[1]
            return any(x.pid != v.pid for x in find(deployment=dep)) and _replicas_ok(dep, v)
        return any(x.pid != v.pid for x in find(name=v.name))

    try:
        wait_until(back, timeout, 0.1, f"{v.name or v.class_name} back")
    except TimeoutError:
        return None
    return time.time() - t0


_REPLICA_COUNTS: dict[str, int] = {}


def remember_replicas(deployment: str) -> int:
    """Record how many replicas of ``deployment`` run now (what :func:`actor_back` restores)."""
    _REPLICA_COUNTS[deployment] = len(find(deployment=deployment))
    return _REPLICA_COUNTS[deployment]


def _replicas_ok(deployment: str, v: Victim) -> bool:
    now = [x for x in find(deployment=deployment) if x.pid != v.pid]
    return len(now) >= _REPLICA_COUNTS.get(deployment, 1)


# -- figures ------------------------------------------------------------------------------------


@dataclass
class Fault:
    """What one fault did to the load."""

    name: str
    t_kill: float
    samples: list[Sample]
    recovery_s: float | None  # kill -> first primary answer
    actor_back_s: float | None  # kill -> the actor / replica ALIVE again
    extra: dict[str, Any] = field(default_factory=dict)

    def window(self, seconds: float = 10.0) -> list[Sample]:
        """Requests sent in [kill, kill + ``seconds``] (or until recovered, if later)."""
        end = self.t_kill + max(seconds, self.recovery_s or 0.0)
        return [s for s in self.samples if self.t_kill <= s.t_sent <= end]

    def after(self, seconds: float) -> list[Sample]:
        return [s for s in self.samples if s.t_sent >= self.t_kill + seconds]

    def five_xx(self) -> list[Sample]:
        return [s for s in self.samples if s.status >= 500 or s.status == 0]

    def non_schema(self) -> list[Sample]:
        return [s for s in self.samples if s.status != 200 and not s.schema_ok]

    def summary(self) -> dict[str, Any]:
        from bench._common import percentiles

        win = self.window()
        statuses: dict[int, int] = {}
        routes: dict[str, int] = {}
        errors: dict[str, int] = {}
        for s in self.samples:
            if s.status != 200:
                key = f"{s.status} {s.model} {str(s.code)[:80]}"
                errors[key] = errors.get(key, 0) + 1
            statuses[s.status] = statuses.get(s.status, 0) + 1
            if s.route:
                routes[s.route] = routes.get(s.route, 0) + 1
        return {
            "requests": len(self.samples),
            "statuses": statuses,
            "routes": routes,
            "errors": errors,
            "five_xx": len(self.five_xx()),
            "non_schema": len(self.non_schema()),
            "recovery_s": self.recovery_s,
            "actor_back_s": self.actor_back_s,
            "window_requests": len(win),
            "window_p99_ms": percentiles([s.latency for s in win])["p99_ms"],
            # (seconds from the kill to the send, status) of every answer that is not a 200
            "error_times": [(round(s.t_sent - self.t_kill, 3), s.status)
                            for s in self.samples if s.status != 200],
            **self.extra,
        }


def run_fault(
    name: str,
    load: Load,
    kill: Callable[[], tuple[float, Victim | None]],
    *,
    before_s: float = 2.0,
    after_s: float = 10.0,
    recover_timeout: float = 60.0,
) -> Fault:
    """Let ``load`` run ``before_s``, kill, measure recovery (first primary answer; the actor
    ALIVE again), keep the load on until ``after_s`` past the kill or recovery, whichever later.
    The load keeps running: the caller stops it."""
    time.sleep(before_s)  # load duration before the fault, not a synchronisation
    t_kill, victim = kill()
    back = actor_back(victim, recover_timeout) if victim is not None else None
    recovery = load.first_primary_after(t_kill, recover_timeout)
    rest = t_kill + max(after_s, recovery or 0.0, back or 0.0) - time.time()
    if rest > 0:
        time.sleep(rest)  # load duration after the fault
    return Fault(name, t_kill, load.snapshot(), recovery, back)


# -- the prediction log -------------------------------------------------------------------------


def prediction_log(app: ChaosApp) -> list[tuple[str, str]]:
    """``(request_id, route)`` of every row of the monitor's prediction log table."""
    from deltalake import DeltaTable

    st = app.p.storage
    t = DeltaTable(st.uri("monitoring", "prediction_log"),
                   storage_options=st.delta_storage_options())
    rows = t.to_pyarrow_table(columns=["request_id", "route"])
    return list(zip(rows["request_id"].to_pylist(), rows["route"].to_pylist(), strict=True))


# -- Prometheus ---------------------------------------------------------------------------------


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None
    )


@contextmanager
def prometheus(target: str, workdir: Path) -> Iterator[str]:
    """A real Prometheus on loopback scraping ``target`` (``host:port``) every second; yields
    its base URL once ready; stopped (and its data removed) after."""
    binary = prometheus_binary()
    if binary is None:
        raise FileNotFoundError("prometheus is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "prometheus.yml"
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: raymlp-monitor\n    metrics_path: /metrics\n"
        f"    scrape_interval: 1s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, f"--config.file={conf}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/-/ready", timeout=2).status_code == 200, 60, 0.2,
                   "prometheus ready")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


def prom_query(base: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector of ``expr`` (``[{"metric": {...}, "value": [ts, "v"]}]``)."""
    r = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]


def prom_target(base: str) -> dict[str, Any]:
    """The one active scrape target (health, lastScrape, lastError, scrapeUrl)."""
    r = httpx.get(f"{base}/api/v1/targets", timeout=10)
    r.raise_for_status()
    (t,) = r.json()["data"]["activeTargets"]
    return t
