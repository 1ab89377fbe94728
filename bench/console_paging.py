"""How fast the console's All Executions report pages at 100,000+ executions.

``python -m bench.console_paging [ROWS] [--url URL]`` builds a catalog (a SQLite file in a
temporary folder by default) with ROWS finished executions (default 100,000; their
operations, jobs, tasks and attempts, spread over the last 10 days, 1 % failed, two
workers, two packages), then times each console read the pages make, median of 20 runs.
The rows are bulk-inserted with SQLAlchemy Core: a benchmark fixture, not catalog code.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog import Catalog
from dispatcher.catalog.console import ExecutionFilter
from dispatcher.catalog.tables import tables_for
from schemas.states import ExecutionStatus, TaskState
from tests.fixtures.catalog import project_archive

CHUNK = 5000


def build(url: str, rows: int) -> None:
    catalog = Catalog.open(url)
    catalog.init()
    catalog.deploy_project("Finance", "Sales", project_archive("Sales"))
    catalog.close()
    engine = sa.create_engine(url)
    t = tables_for(engine.dialect.name)
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        lsn = conn.execute(sa.select(sa.func.max(t.object_versions.c.object_version_lsn))).scalar()
        first = int(conn.execute(sa.select(sa.func.max(t.operations.c.operation_id))).scalar()) + 1
        for start in range(0, rows, CHUNK):
            batch = range(first + start, first + min(start + CHUNK, rows))
            _insert(conn, t, batch, rows, first, now, lsn)
    if engine.dialect.name == "postgresql":  # as autovacuum would, after a bulk load
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
    engine.dispose()


def _insert(conn: Any, t: Any, ids: range, rows: int, first: int, now: datetime, lsn: int) -> None:
    ops, execs, jobs, tasks, attempts = [], [], [], [], []
    for i in ids:
        created = now - timedelta(days=10) * (1 - (i - first) / rows)
        ended = created + timedelta(seconds=3)
        status = ExecutionStatus.FAILED if i % 100 == 0 else ExecutionStatus.SUCCEEDED
        worker = f"w{i % 2 + 1}"
        job_id, task_id = uuid.uuid4(), uuid.uuid4()
        ops.append(
            {
                "operation_id": i,
                "operation_type": 200,
                "created_time": created,
                "status": int(status),
                "start_time": created,
                "end_time": ended,
                "worker_agent_id": worker,
                "executed_count": 1,
                "caller_name": "bench",
            }
        )
        execs.append(
            {
                "execution_id": i,
                "folder_name": "Finance",
                "project_name": "Sales",
                "package_name": "Load" if i % 10 else "Other",
                "project_lsn": lsn,
                "use32bitruntime": False,
                "runinscaleout": True,
                "useanyworker": True,
                "job_id": job_id,
            }
        )
        jobs.append(
            {
                "job_id": job_id,
                "execution_id": i,
                "job_type": 1,
                "use_any_worker": True,
                "is_cancelled": False,
                "created_time": created,
                "last_updated_time": ended,
            }
        )
        tasks.append(
            {
                "task_id": task_id,
                "job_id": job_id,
                "execution_id": i,
                "task_type": 0,
                "status": int(
                    TaskState.SUCCEEDED if status is ExecutionStatus.SUCCEEDED else TaskState.FAILED
                ),
                "attempt": 1,
                "executed_count": 1,
                "max_executed_count": 1,
                "worker_agent_id": worker,
                "is_cancelled": False,
                "cancel_sent": False,
                "published": True,
                "created_time": created,
                "last_updated_time": ended,
            }
        )
        attempts.append(
            {
                "task_id": task_id,
                "attempt": 1,
                "worker_agent_id": worker,
                "dispatched_at": created,
                "started_at": created,
                "ended_at": ended,
                "outcome": status.key,
                "exit_code": 0,
            }
        )
    for table, values in (
        (t.operations, ops),
        (t.executions, execs),
        (t.jobs, jobs),
        (t.tasks, tasks),
        (t.task_attempts, attempts),
    ):
        conn.execute(sa.insert(table), values)


def timed(call: Callable[[], object], runs: int = 20) -> float:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=100_000)
    parser.add_argument("--url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite:///{Path(folder) / 'ssisdb.sqlite3'}"
        began = time.perf_counter()
        build(url, args.rows)
        took = time.perf_counter() - began
        print(f"built {args.rows} executions in {took:.1f} s ({url.split(':')[0]})")
        catalog = Catalog.open(url)
        reads = catalog.console()
        newest = reads.executions_page(ExecutionFilter(), limit=1).rows[0].execution_id
        week = datetime.now(UTC) - timedelta(days=7)
        cases: dict[str, Callable[[], object]] = {
            "first page (50)": lambda: reads.executions_page(ExecutionFilter()),
            "page in the middle (before=newest-50000)": lambda: reads.executions_page(
                ExecutionFilter(), before=newest - 50_000
            ),
            "last page": lambda: reads.executions_page(
                ExecutionFilter(), before=newest - args.rows + 30
            ),
            "status=failed (1 %)": lambda: reads.executions_page(
                ExecutionFilter(statuses=(ExecutionStatus.FAILED,))
            ),
            "package=Other (10 %)": lambda: reads.executions_page(ExecutionFilter(package="Other")),
            "worker=w2": lambda: reads.executions_page(ExecutionFilter(worker="w2")),
            "created before 7 days ago": lambda: reads.executions_page(ExecutionFilter(until=week)),
            "charts: ended in the last 3 h": lambda: reads.ended_since(
                datetime.now(UTC) - timedelta(hours=3)
            ),
            "charts: attempts in the last 3 h": lambda: reads.attempts_since(
                datetime.now(UTC) - timedelta(hours=3)
            ),
            "charts: latencies in the last 3 h": lambda: reads.latencies_since(
                datetime.now(UTC) - timedelta(hours=3)
            ),
        }
        for name, call in cases.items():
            print(f"{name:45s} {timed(call):8.2f} ms")
        catalog.close()


if __name__ == "__main__":
    main()
