"""A real cluster on this machine for the chaos suite: the master and four workers as
processes (``python -m dispatcher.cli master`` and ``python -m consumers.worker``), on the
TLS RabbitMQ node, each worker reaching the broker through its own :class:`Proxy`.

Intervals are short so a run takes minutes: LeaseInterval 2 s, task and agent
heartbeats 0.5 s, the expired-task sweep every 1 s, a worker offline after 3 s without
a heartbeat, 5 s for a dispatched attempt's first lease.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dispatcher.catalog import Catalog
from dispatcher.projects import build_archive
from tests.chaos.proxy import Proxy
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.fixtures.worker import broker_table, toml

REPO = Path(__file__).resolve().parents[2]
CHAOS_PROJECT = REPO / "examples" / "chaos"
FOLDER = PROJECT = "Chaos"
WORKERS = ("w1", "w2", "w3", "w4")


@dataclass(frozen=True)
class Timing:
    """The cluster's intervals; the checker bounds recovery with them."""

    lease_interval_s: float = 2.0
    task_heartbeat_s: float = 0.5
    agent_heartbeat_s: float = 0.5
    sweep_interval_s: float = 1.0
    worker_offline_after_s: float = 3.0
    initial_lease_s: float = 5.0
    heartbeat_error_tolerance_s: float = 1.5
    max_task_count: int = 8
    task_backlog: int = 3
    backlog_workers: tuple[str, ...] = ("w1", "w3")
    """Half the workers hold a backlog, so faults meet held assignments too."""
    expiry_grace_s: float = 8.0
    """After the master starts or its heartbeat consumer reconnects, leases are judged
    only after this long: the workers' own reconnect backoff (up to ~5 s) plus a beat."""
    leader_lease_s: float = 3.0
    """The leader lease of several masters: a standby takes over this long after the
    leader's last renewal (plus up to a third of it, its next try)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One process of the cluster, its log in ``log_path``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start {self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> float:
        """SIGKILL the process; the time it was sent."""
        at = time.time()
        os.kill(self.pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)
        return at

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def connected_at(self, connection: str, since: float) -> float | None:
        """When the log last said ``broker.connected`` for ``connection`` after ``since``
        (epoch seconds), or None."""
        found = None
        for raw in self.log().splitlines():
            if "broker.connected" not in raw or connection not in raw:
                continue
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if entry.get("connection_name") != connection and connection not in str(
                entry.get("event", "")
            ):
                continue
            at = datetime.fromisoformat(entry["time"]).timestamp()
            if at >= since:
                found = at
        return found


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALEOUT_", "CHAOS_"))}
    env.update(extra)
    return env


@dataclass
class Cluster:
    root: Path
    tls: TlsBroker
    vhost: str
    catalog_url: str
    timing: Timing = field(default_factory=Timing)
    master: Service | None = None
    workers: dict[str, Service] = field(default_factory=dict)
    proxies: dict[str, Proxy] = field(default_factory=dict)
    metrics_port: int = 0
    standbys: list[Service] = field(default_factory=list)

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    # -- composition ---------------------------------------------------------------------

    def build(self, worker_ids: tuple[str, ...] = WORKERS) -> Cluster:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.master = self._master_service()
        for worker_id in worker_ids:
            proxy = Proxy(self.tls.host, self.tls.port).start()
            self.proxies[worker_id] = proxy
            self.workers[worker_id] = self._worker_service(worker_id, proxy)
        return self

    def add_standby(self, name: str = "master2") -> Service:
        """Another master on the same catalog and broker (started by :meth:`start`)."""
        service = self._master_service(name)
        self.standbys.append(service)
        return service

    def _master_service(self, name: str = "master") -> Service:
        t = self.timing
        port = free_port()
        if name == "master":
            self.metrics_port = port
        broker = self.tls.settings_for("scaleout-master", self.vhost, heartbeat_s=5)
        settings = {
            "master": {
                "master_heartbeat_interval_ms": 1000,
                "deal_with_expired_tasks_interval_ms": int(t.sweep_interval_s * 1000),
                "cleanup_completed_jobs_interval_ms": 3_600_000,
                "initial_lease_s": t.initial_lease_s,
                "worker_offline_after_s": t.worker_offline_after_s,
                "expiry_grace_s": t.expiry_grace_s,
                "dispatch_poll_interval_ms": 200,
                "republish_after_s": 2.0,
                "metrics_port": port,
                "master_id": name,
                "leader_lease_s": t.leader_lease_s,
                "broker": broker_table(broker),
                "catalog": {"url": self.catalog_url},
            }
        }
        path = self.root / f"{name}.toml"
        path.write_text(toml(settings))
        argv = [sys.executable, "-m", "dispatcher.cli", "--config", str(path), "master"]
        return Service(name, argv, _clean_env(), self.root / f"{name}.log")

    def _worker_service(self, worker_id: str, proxy: Proxy) -> Service:
        t = self.timing
        folder = self.root / worker_id
        folder.mkdir(parents=True, exist_ok=True)
        broker = self.tls.settings_for(
            worker_id,
            self.vhost,
            url=f"amqps://127.0.0.1:{proxy.port}/{self.vhost}",
            server_hostname="localhost",
            heartbeat_s=4,
            confirm_timeout_s=2.0,
            connect_timeout_s=2.0,
        )
        settings = {
            "worker": {
                "worker_id": worker_id,
                "AgentHeartbeatInterval": t.agent_heartbeat_s,
                "TaskHeartbeatInterval": t.task_heartbeat_s,
                "LeaseInterval": t.lease_interval_s,
                "HeartbeatErrorTolerance": t.heartbeat_error_tolerance_s,
                "MaxTaskCount": t.max_task_count,
                "TaskBacklog": t.task_backlog if worker_id in t.backlog_workers else 0,
                "TaskRequestMaxCPU": 100,
                "TaskRequestMinMemory": 0,
                "TasksRootFolder": folder / "tasks",
                "ExecutionLogCacheFolder": folder / "elogcache",
                "project_cache_folder": folder / "projects",
                "shutdown_grace_s": 2,
                "kill_grace_s": 1,
                "project_fetch_timeout_s": 20,
                "broker": broker_table(broker),
            }
        }
        path = folder / "worker.toml"
        path.write_text(toml(settings))
        env = _clean_env(CHAOS_WORKER_ID=worker_id, CHAOS_RECORDS_DIR=str(self.records_dir))
        argv = [sys.executable, "-m", "consumers.worker", str(path)]
        return Service(worker_id, argv, env, folder / "worker.log")

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        assert self.master is not None
        self.master.start()
        for standby in self.standbys:
            standby.start()
        for worker in self.workers.values():
            worker.start()

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.restore()
        for worker in self.workers.values():
            worker.stop()
        for master in [self.master, *self.standbys]:
            if master is not None:
                master.stop()
        for proxy in self.proxies.values():
            proxy.close()

    def logs_tail(self, lines: int = 40) -> str:
        services = [self.master, *self.standbys, *self.workers.values()]
        parts = []
        for service in services:
            if service is not None:
                tail = service.log().splitlines()[-lines:]
                parts.append(f"---- {service.name} ----\n" + "\n".join(tail))
        return "\n".join(parts)

    def scrape(self) -> dict[str, float]:
        """The master's counters: {'name{label=value,...}': value}; {} when it is down."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # loopback http
                text = response.read().decode()
        except OSError:
            return {}
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples


def small_cluster(
    tmp_path: Path,
    tls_broker: TlsBroker,
    vhost: str,
    workers: tuple[str, ...],
    timing: Timing | None = None,
    catalog_url: str | None = None,
) -> tuple[Cluster, Catalog]:
    """A master and ``workers`` on ``catalog_url`` (a SQLite file in ``tmp_path`` unless
    given) with the chaos project deployed, running and online."""
    url = catalog_url or f"sqlite:///{tmp_path / 'ssisdb.sqlite3'}"
    timing = timing or Timing()
    catalog = Catalog.open(
        url, worker_offline_after_s=timing.worker_offline_after_s, initial_lease_s=5
    )
    catalog.init()
    catalog.deploy_project(FOLDER, PROJECT, build_archive(CHAOS_PROJECT))
    for worker in workers:
        catalog.add_worker_agent(worker, is_enabled=True, max_task_count=4)
    cluster = Cluster(tmp_path, tls_broker, vhost, url, timing).build(workers)
    cluster.start()
    wait_for(
        lambda: sum(w.is_online for w in catalog.list_worker_agents()) == len(workers),
        60,
        "the workers to come online",
    )
    return cluster, catalog


def reconnected(
    cluster: Cluster, since: float, *, workers: bool = True, timeout_s: float = 40.0
) -> float:
    """When the master's status consumer and every worker's reporter were connected again
    after ``since``: the end of a broker or master outage as the cluster lived it."""
    deadline = time.monotonic() + timeout_s
    wanted: list[tuple[Service, str]] = []
    if cluster.master is not None:
        wanted.append((cluster.master, "master:scaleout.master.status"))
    for name, worker in cluster.workers.items() if workers else ():
        wanted += [(worker, f"scaleout-worker-{name}-{what}") for what in ("reports", "heartbeat")]
    latest = since
    for service, connection in wanted:
        while (at := service.connected_at(connection, since)) is None:
            if time.monotonic() > deadline:
                return time.time()  # not seen: the window runs until now
            time.sleep(0.2)
        latest = max(latest, at)
    return latest


def small_cluster_running(
    tmp_path: Path,
    tls_broker: TlsBroker,
    vhost: str,
    workers: tuple[str, ...],
    timing: Timing | None = None,
) -> Iterator[tuple[Cluster, Catalog]]:
    """:func:`small_cluster` for a fixture to ``yield from``: stopped and closed after."""
    cluster, catalog = small_cluster(tmp_path, tls_broker, vhost, workers, timing)
    try:
        yield cluster, catalog
    finally:
        cluster.stop()
        catalog.close()
