"""Dispatch latency at light load: ``start_execution`` -> the worker's ``started`` recorded.

A master and one worker (in-process runner) run as CLI processes on a fresh vhost of the
local RabbitMQ (plain AMQP, ``sender_identity=shared_user``) and a SQLite catalog. Each
execution is created, then timed from just before ``start()`` (which commits and wakes the
master) to its attempt's ``started_at`` in the catalog; the next starts only when the
previous ended. Usage: ``python -m bench.latency [N]`` (default 200, after 5 warm-ups).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from dispatcher.api import ScaleOut
from dispatcher.catalog import Catalog
from dispatcher.settings import BrokerSettings

REPO = Path(__file__).resolve().parents[1]
WARMUP = 5


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120)


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", *argv],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


Sample = tuple[float, float, float]
"""Milliseconds: start -> started recorded, start -> dispatched, dispatched -> started."""


def measure(root: Path, count: int) -> list[Sample]:
    vhost = f"latency-{uuid.uuid4().hex[:8]}"
    _ctl("add_vhost", vhost)
    _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    catalog_url = f"sqlite:///{root / 'ssisdb.sqlite3'}"
    broker_url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOUT_")}
    env |= {
        "SCALEOUT_CATALOG__URL": catalog_url,
        "SCALEOUT_BROKER__URL": broker_url,
        "SCALEOUT_SENDER_IDENTITY": "shared_user",
        "SCALEOUT_METRICS_PORT": "0",
    }
    worker_env = env | {
        "SCALEOUT_MASTER_USER_ID": "guest",
        "SCALEOUT_RUNNER_MODE": "inprocess",
        "SCALEOUT_TASK_REQUEST_MAX_CPU": "100",
        "SCALEOUT_TASK_REQUEST_MIN_MEMORY_MB": "0",
        "SCALEOUT_AGENT_HEARTBEAT_INTERVAL_S": "1",
        "SCALEOUT_TASK_HEARTBEAT_INTERVAL_S": "1",
        "SCALEOUT_TASKS_ROOT_FOLDER": str(root / "tasks"),
        "SCALEOUT_EXECUTION_LOG_CACHE_FOLDER": str(root / "elog"),
        "SCALEOUT_PROJECT_CACHE_FOLDER": str(root / "projects"),
    }
    so = ScaleOut(Catalog.open(catalog_url), BrokerSettings(url=broker_url))
    so.init_catalog()
    so.deploy(REPO / "examples" / "sales_etl", "F")
    so.add_worker("latency", enabled=True)
    so.ensure_worker_queues("latency")
    master = _spawn(["master"], env, root / "master.log")
    worker = _spawn(["worker", "--id", "latency"], worker_env, root / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while not any(w.is_online for w in so.workers()):
            if time.monotonic() > deadline:
                raise SystemExit("the worker never came online; see worker.log")
            time.sleep(0.2)
        return [_one(so) for _ in range(count + WARMUP)][WARMUP:]
    finally:
        for process in (worker, master):
            process.terminate()
            process.wait(30)
        so.close()
        _ctl("delete_vhost", vhost)


def _one(so: ScaleOut) -> Sample:
    execution_id = so.create_execution("F", "SalesETL", "Summarise")
    before = datetime.now(UTC)
    so.start(execution_id)
    deadline = time.monotonic() + 30
    while not so.execution(execution_id).status.is_terminal:
        if time.monotonic() > deadline:
            raise SystemExit(f"execution {execution_id} did not end within 30 s")
        time.sleep(0.002)
    attempt = so.catalog.execution_attempts(execution_id)[0]
    assert attempt.started_at is not None
    return (
        (attempt.started_at - before).total_seconds() * 1000,
        (attempt.dispatched_at - before).total_seconds() * 1000,
        (attempt.started_at - attempt.dispatched_at).total_seconds() * 1000,
    )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory(prefix="scaleout-latency-") as folder:
        samples = measure(Path(folder), count)
    for index, name in enumerate(("start->started", "start->dispatched", "dispatched->started")):
        values = sorted(sample[index] for sample in samples)
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
        print(
            f"dispatch latency, light load, SQLite, {name}: n={len(values)} "
            f"p50_ms={statistics.median(values):.1f} p99_ms={p99:.1f} max_ms={values[-1]:.1f}"
        )


if __name__ == "__main__":
    main()
