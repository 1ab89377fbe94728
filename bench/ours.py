"""scaleout itself, end to end: a master and workers as separate processes
(``python -m dispatcher.cli master|worker``), the no-op project of ``examples/bench``, and
the catalog's own timestamps (database clock) as the measure.

Throughput gate: every execution is created and started first (``start_execution``, its
task pending) while the workers are registered but disabled, so the enqueue cost is
measured separately and excluded; the clock starts when the workers are enabled (and the
master woken) and stops at the last execution's ``end_time`` in the catalog.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pika
import sqlalchemy as sa

from bench.infra import (
    STATS_SETTLE_S,
    Children,
    Sampler,
    cpu_seconds,
    database_of,
    percentile,
    pg_commits,
)
from dispatcher.api import ScaleOut
from dispatcher.broker import topology
from dispatcher.catalog import Catalog
from dispatcher.catalog.procedures import NewExecution
from dispatcher.catalog.tables import tables_for
from dispatcher.outbound import Outbound
from dispatcher.settings import BrokerSettings

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bench"
FOLDER, PROJECT, PACKAGE = "Bench", "Bench", "Noop"
TERMINAL = (3, 4, 6, 7, 9)
ENQUEUE_BATCH = 500
OFFER_TICK_S = 0.01
SUCCEEDED = 7

MASTER_ENV = {
    "SCALEOUT_SENDER_IDENTITY": "shared_user",  # one broker user (guest) for everyone
    "SCALEOUT_METRICS_PORT": "0",
}
WORKER_ENV = {
    "SCALEOUT_RUNNER_MODE": "inprocess",
    "SCALEOUT_MASTER_USER_ID": "guest",
    "SCALEOUT_AGENT_HEARTBEAT_INTERVAL_S": "5",
    # One shared 2-core box: SSIS's 70 % CPU gate would make the workers refuse tasks.
    "SCALEOUT_TASK_REQUEST_MAX_CPU": "100",
    "SCALEOUT_TASK_REQUEST_MIN_MEMORY_MB": "0",
    "SCALEOUT_SHUTDOWN_GRACE_S": "2",
}


def aware(value: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes; PostgreSQL aware ones."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass
class E2E:
    executions: int
    workers: int
    enqueue_s: float
    elapsed_s: float
    succeeded: int
    master_cpu_s: float
    workers_cpu_s: float
    steady_s: float = 0.0
    """First execution's end_time -> last one's (the measure every system gets)."""
    rabbitmq_cpu_s: float = 0.0
    commits: int | None = None
    """Catalog commits over the window (PostgreSQL's xact_commit; None: not counted)."""

    @property
    def per_s(self) -> float:
        """Completions per second, first completion -> last, as for the peers."""
        if self.executions < 2 or self.steady_s <= 0:
            return 0.0
        return (self.executions - 1) / self.steady_s

    @property
    def enable_per_s(self) -> float:
        """N / (workers enabled -> last end): the issue-9 measure, start-up included."""
        return self.executions / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    offered_per_s: float = 0.0


class Cluster:
    """A catalog, a master and ``workers`` worker processes on one vhost."""

    def __init__(
        self,
        folder: Path,
        catalog_url: str,
        broker_url: str,
        workers: int,
        max_task_count: int | None = None,
        task_backlog: int | None = None,
    ) -> None:
        self.max_task_count = max_task_count
        """None: the product default (SSIS's MaxTaskCount, 10)."""
        self.task_backlog = task_backlog
        """None: the product default (none)."""
        self.folder = folder
        self.catalog_url = catalog_url
        self.broker = BrokerSettings(url=broker_url)
        self.worker_ids = [f"bench-{i}" for i in range(1, workers + 1)]
        self.children = Children(folder)
        self.catalog = Catalog.open(catalog_url)
        self.so = ScaleOut(self.catalog, self.broker)
        self.engine = sa.create_engine(catalog_url)
        self.t = tables_for(self.engine.dialect.name)
        self.outbound: Outbound | None = None

    # -- set-up --------------------------------------------------------------------------

    def prepare(self) -> None:
        self.so.init_catalog()
        self.so.deploy(EXAMPLE, FOLDER, PROJECT)
        for worker in self.worker_ids:
            self.so.add_worker(worker, enabled=False)
            self.so.ensure_worker_queues(worker)

    def start(self) -> None:
        common = {"SCALEOUT_BROKER__URL": self.broker.url}
        master = {**MASTER_ENV, **common, "SCALEOUT_CATALOG__URL": self.catalog_url}
        self.children.python("master", ["-m", "dispatcher.cli", "master"], master)
        for worker in self.worker_ids:
            home = self.folder / worker
            env = {
                **WORKER_ENV,
                **common,
                "SCALEOUT_WORKER_ID": worker,
                "SCALEOUT_TASKS_ROOT_FOLDER": str(home / "tasks"),
                "SCALEOUT_EXECUTION_LOG_CACHE_FOLDER": str(home / "elogcache"),
                "SCALEOUT_PROJECT_CACHE_FOLDER": str(home / "projects"),
            }
            if self.max_task_count is not None:
                env["SCALEOUT_MAX_TASK_COUNT"] = str(self.max_task_count)
            if self.task_backlog is not None:
                env["SCALEOUT_TASK_BACKLOG"] = str(self.task_backlog)
            self.children.python(worker, ["-m", "dispatcher.cli", "worker"], env)
        self.outbound = Outbound(self.broker, name="bench-client")
        self._wait_master(timeout_s=60)
        self._wait_online(timeout_s=60)

    def _wait_master(self, timeout_s: float) -> None:
        """Until the master consumes its status and heartbeat queues (the shared broker
        may be restarted by other suites meanwhile: connection errors are retried)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection = pika.BlockingConnection(pika.URLParameters(self.broker.url))
                try:
                    channel = connection.channel()
                    counts = [
                        channel.queue_declare(q, passive=True).method.consumer_count
                        for q in (topology.STATUS_QUEUE, topology.HEARTBEAT_QUEUE)
                    ]
                finally:
                    with contextlib.suppress(pika.exceptions.AMQPError):
                        connection.close()
                if all(counts):
                    return
            time.sleep(0.3)
        msg = f"the master did not start consuming within {timeout_s:g} s; logs in {self.folder}"
        raise RuntimeError(msg)

    def _wait_online(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            rows = self.catalog.list_worker_agents()
            online = {r.worker_agent_id for r in rows if r.is_online}
            if online >= set(self.worker_ids):
                return
            time.sleep(0.2)
        msg = f"workers not online within {timeout_s:g} s; logs in {self.folder}"
        raise RuntimeError(msg)

    def _check_alive(self) -> None:
        if dead := self.children.dead():
            msg = f"{', '.join(dead)} exited early; logs in {self.folder}"
            raise RuntimeError(msg)

    def stop(self) -> None:
        if self.outbound is not None:
            self.outbound.close()
        names = [n for n in self.children.procs if n != "master"]
        self.children.stop(names)
        self.children.stop()
        self.catalog.close()
        self.engine.dispose()

    @property
    def master_pid(self) -> int:
        return self.children.procs["master"].pid

    # -- the gate ------------------------------------------------------------------------

    def set_enabled(self, enabled: bool) -> None:
        for worker in self.worker_ids:
            if enabled:
                self.catalog.enable_worker_agent(worker)
            else:
                self.catalog.disable_worker_agent(worker)
        if enabled:
            self.wake()

    def wake(self, execution_id: int | None = None) -> None:
        assert self.outbound is not None
        self.outbound.wake(execution_id)

    def start_executions(self, count: int) -> list[int]:
        """``count`` started executions, as a client enqueuing many does: ``run_many``,
        a transaction per ``ENQUEUE_BATCH``."""
        ids: list[int] = []
        while len(ids) < count:
            batch = min(ENQUEUE_BATCH, count - len(ids))
            started = self.so.run_many(FOLDER, PROJECT, PACKAGE, batch, wake=False)
            ids.extend(started.execution_ids)
        return ids

    def enqueue_one_at_a_time(self, count: int) -> tuple[float, float]:
        """Executions/s enqueued one call per execution: (``create_execution_with`` with
        its start, one transaction each; SSIS's create_execution then start_execution,
        two transactions each). Workers disabled: nothing runs meanwhile."""
        self.set_enabled(False)
        request = NewExecution(FOLDER, PROJECT, PACKAGE, start=True)
        began = time.perf_counter()
        ids = [self.catalog.create_execution_with(request) for _ in range(count)]
        single = count / (time.perf_counter() - began)
        began = time.perf_counter()
        for _ in range(count):
            execution_id = self.catalog.create_execution(FOLDER, PROJECT, PACKAGE)
            self.catalog.start_execution(execution_id)
            ids.append(execution_id)
        ssis = count / (time.perf_counter() - began)
        self.set_enabled(True)
        self.wake()
        self.wait_terminal(ids, timeout_s=max(120.0, count / 10))
        return single, ssis

    # -- reading the catalog -------------------------------------------------------------

    def terminal_count(self, ids: list[int]) -> tuple[int, int]:
        ops = self.t.operations
        in_range = ops.c.operation_id.between(min(ids), max(ids))
        query = sa.select(ops.c.status, sa.func.count()).where(in_range).group_by(ops.c.status)
        with self.engine.connect() as conn:
            counts = {int(s): int(c) for s, c in conn.execute(query)}
        return sum(counts.get(s, 0) for s in TERMINAL), counts.get(SUCCEEDED, 0)

    def ends(self, ids: list[int]) -> tuple[datetime, datetime]:
        """The first and the last end_time of these executions (database clock)."""
        ops = self.t.operations
        query = sa.select(sa.func.min(ops.c.end_time), sa.func.max(ops.c.end_time)).where(
            ops.c.operation_id.between(min(ids), max(ids))
        )
        with self.engine.connect() as conn:
            first, last = conn.execute(query).one()
        return aware(first), aware(last)

    def dispatch_latencies(self, ids: list[int]) -> list[float]:
        """start_execution -> started recorded, ms: the task's created_time (written by
        start_execution) to its first attempt's started_at, both by the database clock."""
        tasks, attempts = self.t.tasks, self.t.task_attempts
        query = (
            sa.select(tasks.c.created_time, attempts.c.started_at)
            .join(attempts, attempts.c.task_id == tasks.c.task_id)
            .where(tasks.c.execution_id.in_(ids), attempts.c.attempt == 1)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            (aware(started) - aware(created)).total_seconds() * 1000
            for created, started in rows
            if started is not None
        ]

    def wait_terminal(self, ids: list[int], timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            done, succeeded = self.terminal_count(ids)
            if done >= len(ids) or time.monotonic() > deadline:
                return succeeded
            self._check_alive()
            time.sleep(0.1)

    # -- the measures --------------------------------------------------------------------

    def warm_up(self, count: int) -> None:
        """A few executions first: workers fetch the project and import the package."""
        self.set_enabled(True)
        ids = self.start_executions(count)
        self.wake()
        self.wait_terminal(ids, timeout_s=120)

    def throughput(
        self,
        count: int,
        timeout_s: float,
        broker_pid: int | None = None,
        count_commits: bool = False,
        on_window: Callable[[], object] | None = None,
    ) -> E2E:
        """N executions enqueued while the workers are disabled (outside the window), then
        run. ``count_commits`` (PostgreSQL only): the catalog's commits over the window,
        with a settle of PostgreSQL's stats flush before and after (22 s more).
        ``on_window`` is called as the window opens (after the enqueue), e.g. to start
        a profiler on what runs the executions rather than on the enqueue."""
        self.set_enabled(False)
        began = time.perf_counter()
        ids = self.start_executions(count)
        enqueue_s = time.perf_counter() - began
        database = database_of(self.catalog_url)
        counting = count_commits and self.engine.dialect.name == "postgresql"
        if counting:
            time.sleep(STATS_SETTLE_S)
        commits_before = pg_commits(database) if counting else 0
        worker_pids = [self.children.procs[w].pid for w in self.worker_ids]
        cpu_before = cpu_seconds(self.master_pid), sum(cpu_seconds(p) for p in worker_pids)
        broker_before = cpu_seconds(broker_pid) if broker_pid else 0.0
        if on_window is not None:
            on_window()
        t0 = datetime.now(UTC)
        self.set_enabled(True)
        succeeded = self.wait_terminal(ids, timeout_s)
        master_cpu = cpu_seconds(self.master_pid) - cpu_before[0]
        workers_cpu = sum(cpu_seconds(p) for p in worker_pids) - cpu_before[1]
        broker_cpu = (cpu_seconds(broker_pid) - broker_before) if broker_pid else 0.0
        if counting:
            time.sleep(STATS_SETTLE_S)
        commits = pg_commits(database) - commits_before if counting else None
        first, last = self.ends(ids)
        return E2E(
            executions=count,
            workers=len(self.worker_ids),
            enqueue_s=enqueue_s,
            elapsed_s=(last - t0).total_seconds(),
            succeeded=succeeded,
            master_cpu_s=master_cpu,
            workers_cpu_s=workers_cpu,
            steady_s=(last - first).total_seconds(),
            rabbitmq_cpu_s=broker_cpu,
            commits=commits,
        )

    def light_latency(self, count: int) -> Latency:
        """One execution at a time: start it, wake the master, wait until it ended."""
        self.set_enabled(True)
        ids = []
        for _ in range(count):
            [execution_id] = self.start_executions(1)
            self.wake(execution_id)
            ids.append(execution_id)
            self.wait_terminal([execution_id], timeout_s=30)
        values = self.dispatch_latencies(ids)
        return Latency(len(values), percentile(values, 50), percentile(values, 99))

    def saturated_latency(self, count: int, rate_per_s: float) -> Latency:
        """Executions started at ``rate_per_s`` (the caller offers 80 % of the measured
        maximum) by one client: at each tick of ``OFFER_TICK_S``, those due by then, with
        one ``run_many`` and one wake, as a busy client would. (One call and one confirmed
        wake per execution could not offer more than ~50/s from one thread.)"""
        self.set_enabled(True)
        ids: list[int] = []
        began = time.perf_counter()
        while len(ids) < count:
            elapsed = time.perf_counter() - began
            due = min(count, int(elapsed * rate_per_s) + 1) - len(ids)
            if due > 0:
                started = self.so.run_many(FOLDER, PROJECT, PACKAGE, due, wake=False)
                ids.extend(started.execution_ids)
                self.wake()
            time.sleep(max(0.0, OFFER_TICK_S - (time.perf_counter() - began - elapsed)))
        offered = count / (time.perf_counter() - began)
        self.wait_terminal(ids, timeout_s=120)
        values = self.dispatch_latencies(ids)
        return Latency(len(values), percentile(values, 50), percentile(values, 99), offered)


@contextlib.contextmanager
def running_cluster(
    folder: Path,
    catalog_url: str,
    broker_url: str,
    workers: int,
    max_task_count: int | None = None,
    task_backlog: int | None = None,
) -> Iterator[Cluster]:
    folder.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(folder, catalog_url, broker_url, workers, max_task_count, task_backlog)
    try:
        cluster.prepare()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def peak_rss_during(pid: int) -> Sampler:
    return Sampler(pid)
