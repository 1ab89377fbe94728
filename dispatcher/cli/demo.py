"""``scaleout demo``: a one-box Scale Out cluster that runs 20 executions, then stops.

What it does, in order: a fresh SQLite SSISDB in ``demo-run/<timestamp>/``; the catalog's
schema; two worker agents registered and enabled (as an operator would in Scale Out
Manager); the example project deployed; a master and two workers started as child
processes (``python -m dispatcher.cli master|worker``) with short SSIS intervals; 20
executions started (a few restricted to one worker, one that fails on purpose and is
retried once); live progress; a final table. It exits 0 only when every execution ended
as planned, and always stops its processes (SIGTERM, then SIGKILL).

Broker: an ``amqps://`` URL means a TLS node with one certificate per process (the CA
and ``client-<user>.pem`` files of ``deploy/certs/make-certs.sh``); otherwise plain AMQP
to the loopback RabbitMQ as ``guest``, where senders cannot be told apart
(``sender_identity=shared_user``), which the demo says.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from dispatcher.api import ScaleOut
from dispatcher.broker import Channel, Publisher, login_user, topology
from dispatcher.broker.provisioning import ManagementApi, master_permissions, worker_permissions
from dispatcher.catalog.records import ExecutionRow, WorkerAgentRow
from dispatcher.cli import render
from dispatcher.errors import BrokerError, ScaleoutError
from dispatcher.settings import BrokerSettings
from schemas.messages import ParameterScalar
from schemas.states import ExecutionStatus

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sales_etl"
FOLDER = "Demo"
PROJECT = "SalesETL"
PLAIN_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
TLS_START_HINT = "start the local TLS node: `make tls-node` (bash deploy/local/tls-node.sh start)"
TLS_MASTER_USER = "scaleout-master"
TLS_NODE_ADMIN = "scaleout-admin"
TLS_NODE_MANAGEMENT_URL = "http://127.0.0.1:15682"
MAX_TASK_COUNT = 5
STOP_GRACE_S = 10.0
ONLINE_WITHIN_S = 20.0
START_HINT = (
    "start RabbitMQ: on this machine `rabbitmq-server -detached` (or `make services`); "
    "anywhere with Docker: `docker run -d -p 127.0.0.1:5672:5672 rabbitmq:3.13`, or the "
    "whole cluster over TLS with deploy/docker-compose.yml (see deploy/README.md)"
)

MASTER_ENV = {
    "SCALEOUT_MASTER_HEARTBEAT_INTERVAL_MS": "1000",
    "SCALEOUT_DEAL_WITH_EXPIRED_TASKS_INTERVAL_MS": "2000",
    "SCALEOUT_DISPATCH_POLL_INTERVAL_MS": "200",
    "SCALEOUT_WORKER_OFFLINE_AFTER_S": "10",
    "SCALEOUT_INITIAL_LEASE_S": "15",
    "SCALEOUT_REPUBLISH_AFTER_S": "3",
    "SCALEOUT_METRICS_PORT": "0",
}
"""Short SSIS intervals, so a one-box run reacts in about a second."""
WORKER_ENV = {
    "SCALEOUT_AGENT_HEARTBEAT_INTERVAL_S": "1",
    "SCALEOUT_TASK_HEARTBEAT_INTERVAL_S": "1",
    "SCALEOUT_LEASE_INTERVAL_S": "10",
    "SCALEOUT_HEARTBEAT_ERROR_TOLERANCE_S": "30",
    "SCALEOUT_MAX_TASK_COUNT": str(MAX_TASK_COUNT),
    # One shared 2-core box: SSIS's 70 % CPU gate would make the workers refuse tasks.
    "SCALEOUT_TASK_REQUEST_MAX_CPU": "100",
    "SCALEOUT_TASK_REQUEST_MIN_MEMORY_MB": "0",
    "SCALEOUT_SHUTDOWN_GRACE_S": "2",
    "SCALEOUT_PROJECT_FETCH_TIMEOUT_S": "15",
}


@dataclass(frozen=True, slots=True)
class DemoOptions:
    root: Path
    broker_url: str | None
    certs: Path
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Planned:
    """One execution the demo starts, and what must become of it."""

    package: str
    parameters: dict[str, ParameterScalar] = field(default_factory=dict)
    workers: tuple[str, ...] = ()
    retry_count: int = 0
    expect: ExecutionStatus = ExecutionStatus.SUCCEEDED
    attempts: int = 1

    @property
    def note(self) -> str:
        if self.expect is ExecutionStatus.FAILED:
            return f"fails, {self.retry_count} retry"
        return f"{'|'.join(self.workers)} only" if self.workers else "any"

    def matches(self, row: ExecutionRow) -> bool:
        if row.status is not self.expect or row.executed_count != self.attempts:
            return False
        return not self.workers or row.worker_agent_id in self.workers


def plan(first: str, second: str) -> list[Planned]:
    """20 executions: 15 for any worker, 4 pinned to one, 1 that fails twice."""
    runs = [Planned("LoadSales", {"Currency": c}) for c in ("EUR", "USD", "GBP", "EUR", "JPY")]
    runs += [Planned("Sleep", {"Seconds": s, "Interval": 0.5}) for s in (0.5, 1, 1.5, 2, 1)]
    runs += [Planned("Summarise", {"Region": r}) for r in ("North", "South", "East", "West", "")]
    runs += [
        Planned("Sleep", {"Seconds": 1}, workers=(first,)),
        Planned("LoadSales", workers=(first,)),
        Planned("Summarise", workers=(first,)),
        Planned("Sleep", {"Seconds": 1}, workers=(second,)),
        Planned(
            "LoadSales",
            {"FailOnPurpose": True},
            retry_count=1,
            expect=ExecutionStatus.FAILED,
            attempts=2,
        ),
    ]
    return runs


# -- the broker ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerPlan:
    master: BrokerSettings
    workers: dict[str, BrokerSettings]
    sender_identity: str

    @property
    def master_user(self) -> str:
        return login_user(self.master) or "guest"


def broker_plan(options: DemoOptions) -> BrokerPlan:
    url = options.broker_url or PLAIN_URL
    if url.startswith("amqps://"):
        certs = options.certs

        def tls(user: str) -> BrokerSettings:
            return BrokerSettings(
                url=url,
                ca_file=certs / "ca.pem",
                cert_file=certs / f"client-{user}.pem",
                key_file=certs / f"client-{user}.key",
            )

        missing = [p for p in (certs / "ca.pem", certs / "client-w1.pem") if not p.exists()]
        if missing:
            msg = f"no TLS certificates in {certs} (missing {missing[0].name})"
            raise ScaleoutError(msg, hint="bash deploy/local/tls-node.sh start, or --certs DIR")
        workers = {w: tls(w) for w in ("w1", "w2")}
        return BrokerPlan(tls(TLS_MASTER_USER), workers, "user_id")
    shared = BrokerSettings(url=url)
    workers = {w: shared for w in ("demo-1", "demo-2")}
    return BrokerPlan(shared, workers, "shared_user")


def provision_tls_node(broker: BrokerPlan, certs: Path) -> bool:
    """On the local TLS node (deploy/local/tls-node.sh keeps its admin password beside the
    certificates), give the URL's vhost the master's and the two workers' permissions;
    False when no admin password is there (the vhost must then be provisioned already)."""
    password_file = certs.parent / "admin.password"
    if not broker.master.uses_tls or not password_file.exists():
        return False
    api = ManagementApi(TLS_NODE_MANAGEMENT_URL, TLS_NODE_ADMIN, password_file.read_text().strip())
    vhost = unquote(urlsplit(broker.master.url).path[1:]) or "/"
    api.create_vhost(vhost)
    api.set_permissions(vhost, TLS_MASTER_USER, master_permissions())
    for worker in broker.workers:
        api.set_permissions(vhost, worker, worker_permissions(worker))
    return True


def broker_env(settings: BrokerSettings) -> dict[str, str]:
    env = {"SCALEOUT_BROKER__URL": settings.url}
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(settings, name)
        if value is not None:
            env[f"SCALEOUT_BROKER__{name.upper()}"] = str(value)
    return env


def check_broker(broker: BrokerPlan, certs: Path, out: Console) -> None:
    """Fail fast when nothing listens; provision the local TLS node's vhost; declare the
    topology and empty the workers' queues, so nothing from an earlier, interrupted run
    reaches the new workers."""
    host, port = broker.master.host, _port(broker.master)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        msg = f"no RabbitMQ answers at {host}:{port} ({exc.strerror or exc})"
        hint = TLS_START_HINT if broker.master.uses_tls else START_HINT
        raise BrokerError(msg, hint=hint) from None
    if provision_tls_node(broker, certs):
        out.print(Text("TLS node: vhost provisioned for the master and both workers", style="dim"))

    def declare(channel: Channel) -> None:
        topology.declare_master_topology(channel)
        for worker in broker.workers:
            topology.declare_worker_queues(channel, worker)
            for queue in (topology.worker_queue(worker), topology.control_queue(worker)):
                channel.queue_purge(queue)

    Publisher(broker.master, name="scaleout-demo", declare=declare).close()


def _port(settings: BrokerSettings) -> int:
    return urlsplit(settings.url).port or (5671 if settings.uses_tls else 5672)


# -- child processes -----------------------------------------------------------------------


class Cluster:
    """The master and workers as child processes, each logging to its own file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOUT_")}
        self.base_env["PYTHONUNBUFFERED"] = "1"

    def start(self, name: str, command: str, env: dict[str, str]) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", command],
            env={**self.base_env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
        )
        log.close()

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        """SIGTERM everyone (workers first), wait, SIGKILL whoever is left."""
        for _name, proc in sorted(self.procs.items(), key=lambda kv: kv[0] == "master"):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.1))
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the children are stopped either way."""

    def raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the run -------------------------------------------------------------------------------


def run_demo(options: DemoOptions, out: Console, err: Console) -> int:
    started = time.monotonic()
    broker = broker_plan(options)
    _announce(broker, out)
    check_broker(broker, options.certs, out)
    folder = options.root.resolve() / datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    folder.mkdir(parents=True)
    catalog_url = f"sqlite:///{folder / 'ssisdb.sqlite3'}"
    out.print(Text(f"run folder {folder} (catalog, logs, task folders)", style="dim"))
    cluster = Cluster(folder)
    with sigterm_as_interrupt(), ScaleOut.connect(catalog_url, broker.master) as so:
        try:
            planned = _prepare(so, broker, out)
            _start_cluster(cluster, broker, catalog_url)
            ids = _start_executions(so, planned)
            rows = _watch(so, ids, cluster, options.timeout_s, out)
        except KeyboardInterrupt:
            err.print(Text("\ninterrupted: stopping the master and the workers", style="yellow"))
            raise
        finally:
            cluster.stop()
    wall_s = time.monotonic() - started
    return _report(planned, ids, rows, wall_s=wall_s, folder=folder, out=out, err=err)


def _announce(broker: BrokerPlan, out: Console) -> None:
    if broker.master.uses_tls:
        out.print(Text(f"broker {broker.master.redacted_url}: TLS, one certificate per process"))
        return
    out.print(
        Text(
            f"broker {broker.master.redacted_url}: plain AMQP on loopback as one shared user. "
            "Production uses TLS with a RabbitMQ user (certificate) per worker; "
            "see the README.",
            style="yellow",
        )
    )


def _prepare(so: ScaleOut, broker: BrokerPlan, out: Console) -> list[Planned]:
    revision = so.init_catalog()
    for number, worker in enumerate(broker.workers, start=1):
        so.add_worker(
            worker,
            display_name=f"demo worker {number}",
            enabled=True,
            max_task_count=MAX_TASK_COUNT,
        )
    deployed = so.deploy(EXAMPLE, FOLDER, PROJECT)
    out.print(
        Text(
            f"catalog at revision {revision}; workers {', '.join(broker.workers)} enabled; "
            f"{deployed.folder_name}/{deployed.project_name} deployed"
        )
    )
    first, second = broker.workers
    return plan(first, second)


def _start_cluster(cluster: Cluster, broker: BrokerPlan, catalog_url: str) -> None:
    master = {
        **MASTER_ENV,
        **broker_env(broker.master),
        "SCALEOUT_CATALOG__URL": catalog_url,
        "SCALEOUT_SENDER_IDENTITY": broker.sender_identity,
    }
    cluster.start("master", "master", master)
    for worker, settings in broker.workers.items():
        home = cluster.folder / worker
        env = {
            **WORKER_ENV,
            **broker_env(settings),
            "SCALEOUT_WORKER_ID": worker,
            "SCALEOUT_DISPLAY_NAME": worker,
            "SCALEOUT_MASTER_USER_ID": broker.master_user,
            "SCALEOUT_TASKS_ROOT_FOLDER": str(home / "tasks"),
            "SCALEOUT_EXECUTION_LOG_CACHE_FOLDER": str(home / "elogcache"),
            "SCALEOUT_PROJECT_CACHE_FOLDER": str(home / "projects"),
        }
        cluster.start(worker, "worker", env)


def _start_executions(so: ScaleOut, planned: list[Planned]) -> list[int]:
    ids = []
    for run in planned:
        execution_id = so.create_execution(
            FOLDER,
            PROJECT,
            run.package,
            parameters=run.parameters,
            workers=run.workers,
            caller_name="scaleout-demo",
        )
        so.start(execution_id, run.retry_count, wake=False)
        ids.append(execution_id)
    so.wake()  # best effort; the master also polls every 200 ms
    return ids


def _watch(
    so: ScaleOut, ids: list[int], cluster: Cluster, timeout_s: float, out: Console
) -> dict[int, ExecutionRow]:
    progress = Progress(
        TextColumn("executions"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=out,
    )
    bar = progress.add_task("", total=len(ids))
    started = time.monotonic()
    rows: dict[int, ExecutionRow] = {}
    with Live(progress, console=out, refresh_per_second=8, transient=False) as live:
        while True:
            rows = {i: so.execution(i) for i in ids}
            workers = so.workers()
            done = sum(row.status.is_terminal for row in rows.values())
            progress.update(bar, completed=done, description=render.status_counts(rows.values()))
            live.update(Group(progress, render.workers_line(workers)))
            if done == len(ids) or time.monotonic() - started > timeout_s:
                break
            _check_health(cluster, workers, time.monotonic() - started)
            time.sleep(0.25)
    out.print()
    return rows


def _check_health(cluster: Cluster, workers: list[WorkerAgentRow], elapsed_s: float) -> None:
    """Stop early, with the logs' folder, when a process died or no worker ever came up."""
    hint = f"see the logs in {cluster.folder}"
    if dead := cluster.dead():
        raise ScaleoutError(f"{', '.join(dead)} exited early", hint=hint)
    if elapsed_s > ONLINE_WITHIN_S and not any(w.last_online_time for w in workers):
        msg = f"no worker sent a heartbeat within {ONLINE_WITHIN_S:g} s"
        raise ScaleoutError(msg, hint=hint)


def _report(
    planned: list[Planned],
    ids: list[int],
    rows: dict[int, ExecutionRow],
    *,
    wall_s: float,
    folder: Path,
    out: Console,
    err: Console,
) -> int:
    verdicts = [
        (rows[i], planned_run.matches(rows[i]), planned_run.note)
        for planned_run, i in zip(planned, ids, strict=True)
    ]
    wrong = sum(not ok for _, ok, _ in verdicts)
    out.print(render.demo_table(verdicts))
    succeeded = sum(r.status is ExecutionStatus.SUCCEEDED for r in rows.values())
    failed = sum(r.status is ExecutionStatus.FAILED for r in rows.values())
    out.print(Text(f"{succeeded} succeeded, {failed} failed", style="bold"))
    if wrong:
        err.print(Text(f"{wrong} execution(s) did not end as planned", style="bold red"))
        err.print(Text(f"hint: the processes' logs are in {folder}", style="dim"))
        return 1
    out.print(Text(f"every execution ended as planned in {wall_s:.1f} s", style="green"))
    return 0
