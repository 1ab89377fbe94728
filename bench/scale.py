"""Scale: dispatch latency with 1,000 and with 100,000 finished executions in the catalog
(and the master's peak RSS meanwhile), and heartbeats from many simulated workers.

History is seeded by a documented fast path, not through the API (100,000 executions at a
few ms each would take minutes): the rows of one execution that really ran (operation,
execution, job, task, attempt, its log lines) are cloned in bulk with new ids. Seeded rows
look exactly like finished work to every query the master runs.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import sqlalchemy as sa

from bench.heartbeats import last_sent
from bench.infra import Children, Sampler, cpu_seconds, percentile
from bench.ours import E2E, Cluster, Latency, aware
from dispatcher.broker import topology

CHUNK = 5000


def seed_history(cluster: Cluster, template_id: int, count: int) -> float:
    """Clone the finished execution ``template_id`` ``count`` times; seconds it took."""
    began = time.perf_counter()
    t, engine = cluster.t, cluster.engine
    with engine.connect() as conn:
        rows = _template(conn, t, template_id)
        base = int(conn.execute(sa.select(sa.func.max(t.operations.c.operation_id))).scalar_one())
    for start in range(0, count, CHUNK):
        batch: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
        for offset in range(start, min(count, start + CHUNK)):
            _clone(rows, base + 1 + offset, batch)
        with engine.begin() as conn:
            for name, values in batch.items():
                if values:
                    conn.execute(sa.insert(getattr(t, name)), values)
    if engine.dialect.name == "postgresql":
        # A bulk load leaves the planner's statistics behind until autovacuum gets to them
        # (a live catalog grows by thousands a minute and is analyzed as it goes): without
        # this the first burst at 1,000,000 ran on plans made for 1,000 rows.
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
        with engine.begin() as conn:  # explicit ids leave the identity behind
            table = f"{t.operations.schema}.{t.operations.name}"
            conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'operation_id'), "
                    f"(SELECT max(operation_id) FROM {table}))"
                )
            )
    return time.perf_counter() - began


def _template(conn: sa.Connection, t: Any, execution_id: int) -> dict[str, list[dict[str, Any]]]:
    def rows(table: sa.Table, where: sa.ColumnElement[bool]) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(sa.select(table).where(where)).mappings()]

    tasks = rows(t.tasks, t.tasks.c.execution_id == execution_id)
    task_ids = [r["task_id"] for r in tasks]
    return {
        "operations": rows(t.operations, t.operations.c.operation_id == execution_id),
        "executions": rows(t.executions, t.executions.c.execution_id == execution_id),
        "jobs": rows(t.jobs, t.jobs.c.execution_id == execution_id),
        "tasks": tasks,
        "task_attempts": rows(t.task_attempts, t.task_attempts.c.task_id.in_(task_ids)),
        "operation_messages": rows(
            t.operation_messages, t.operation_messages.c.operation_id == execution_id
        ),
    }


def _clone(
    template: dict[str, list[dict[str, Any]]], new_id: int, out: dict[str, list[dict[str, Any]]]
) -> None:
    job_ids = {r["job_id"]: uuid.uuid4() for r in template["jobs"]}
    task_ids = {r["task_id"]: uuid.uuid4() for r in template["tasks"]}
    for row in template["operations"]:
        out["operations"].append({**row, "operation_id": new_id})
    for row in template["executions"]:
        job = job_ids.get(row["job_id"], row["job_id"])
        out["executions"].append({**row, "execution_id": new_id, "job_id": job})
    for row in template["jobs"]:
        out["jobs"].append({**row, "job_id": job_ids[row["job_id"]], "execution_id": new_id})
    for row in template["tasks"]:
        out["tasks"].append(
            {
                **row,
                "task_id": task_ids[row["task_id"]],
                "job_id": job_ids[row["job_id"]],
                "execution_id": new_id,
            }
        )
    for row in template["task_attempts"]:
        out["task_attempts"].append({**row, "task_id": task_ids[row["task_id"]]})
    for row in template["operation_messages"]:
        clone = {k: v for k, v in row.items() if k != "operation_message_id"}
        clone["operation_id"] = new_id
        if clone.get("task_id") is not None:
            clone["task_id"] = task_ids.get(clone["task_id"], clone["task_id"])
        out["operation_messages"].append(clone)


@dataclass
class History:
    small: int
    large: int
    latency_small: Latency
    latency_large: Latency
    seed_s: float
    burst_large: E2E
    master_peak_rss_mb: float

    @property
    def ratio(self) -> float:
        small = self.latency_small.p50_ms
        return self.latency_large.p50_ms / small if small > 0 else float("nan")


def history_run(cluster: Cluster, *, small: int, large: int, samples: int, burst: int) -> History:
    """Latency with ``small`` then ``large`` finished executions; a burst at ``large``."""
    cluster.warm_up(10)
    template = _a_finished_execution(cluster)
    have = _finished(cluster)
    seed_s = seed_history(cluster, template, max(0, small - have))
    latency_small = cluster.light_latency(samples)
    with Sampler(cluster.master_pid) as sampler:
        seed_s += seed_history(cluster, template, max(0, large - _finished(cluster)))
        latency_large = cluster.light_latency(samples)
        burst_large = cluster.throughput(burst, timeout_s=max(120.0, burst / 5))
    return History(
        small,
        large,
        latency_small,
        latency_large,
        seed_s,
        burst_large,
        sampler.peak_rss / 2**20,
    )


def _a_finished_execution(cluster: Cluster) -> int:
    ops = cluster.t.operations
    query = sa.select(sa.func.max(ops.c.operation_id)).where(ops.c.status == 7)
    with cluster.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _finished(cluster: Cluster) -> int:
    ops = cluster.t.operations
    query = sa.select(sa.func.count()).where(ops.c.status == 7)
    with cluster.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


# -- heartbeats ------------------------------------------------------------------------------


@dataclass
class Heartbeats:
    workers: int
    seconds: float
    first_sight_s: float
    master_cpu_percent: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    backlog_at_end: int


def heartbeat_run(
    cluster: Cluster, children: Children, folder: Path, *, workers: int, seconds: float
) -> Heartbeats:
    """``workers`` simulated workers in two processes, 1 heartbeat/s each, for
    ``seconds``; first a single round, so that registering them (and declaring their
    queues) is measured apart from the steady state."""
    url = cluster.broker.url
    began = time.monotonic()
    _simulate(children, folder, url, workers, 0.0, "first")
    _wait_drained(url, cluster, workers, timeout_s=180)
    first_sight = time.monotonic() - began
    cpu0, t0 = cpu_seconds(cluster.master_pid), time.monotonic()
    outs = _simulate(children, folder, url, workers, seconds, "steady")
    cpu_percent = 100 * (cpu_seconds(cluster.master_pid) - cpu0) / (time.monotonic() - t0)
    backlog = _depth(url)
    _wait_drained(url, cluster, workers, timeout_s=60)
    sent = last_sent(outs)
    online = _last_online(cluster)
    lags = [
        (online[w] - stamp).total_seconds() * 1000
        for w, stamp in sent.items()
        if w in online and online[w] >= stamp
    ]
    return Heartbeats(
        workers,
        seconds,
        first_sight,
        cpu_percent,
        percentile(lags, 50),
        percentile(lags, 99),
        max(lags) if lags else float("nan"),
        backlog,
    )


def _simulate(
    children: Children, folder: Path, url: str, workers: int, seconds: float, tag: str
) -> list[Path]:
    halves = [(0, workers // 2), (workers // 2, workers - workers // 2)]
    outs, names = [], []
    for index, (first, count) in enumerate(halves):
        out = folder / f"heartbeats-{tag}-{index}.json"
        name = f"heartbeats-{tag}-{index}"
        argv = ["-m", "bench.heartbeats", url, str(first), str(count), str(seconds), str(out)]
        children.python(name, argv, {})
        outs.append(out)
        names.append(name)
    deadline = time.monotonic() + seconds + 60
    for name in names:
        children.procs[name].wait(max(1.0, deadline - time.monotonic()))
    children.stop(names)
    return outs


def _depth(url: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ok = connection.channel().queue_declare(topology.HEARTBEAT_QUEUE, passive=True)
        return int(ok.method.message_count)
    finally:
        connection.close()


def _wait_drained(url: str, cluster: Cluster, workers: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _depth(url) == 0 and len(_last_online(cluster)) >= workers:
            time.sleep(0.5)  # the last prefetched ones
            return
        time.sleep(0.25)


def _last_online(cluster: Cluster) -> dict[str, datetime]:
    agents = cluster.t.worker_agents
    query = sa.select(agents.c.worker_agent_id, agents.c.last_online_time).where(
        agents.c.worker_agent_id.like("sim-%"), agents.c.last_online_time.isnot(None)
    )
    with cluster.engine.connect() as conn:
        return {w: aware(stamp) for w, stamp in conn.execute(query)}


def utcnow() -> datetime:
    return datetime.now(UTC)
