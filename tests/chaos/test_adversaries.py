"""Adversaries on a real cluster: a worker with a valid certificate forging another
worker's report, and a poison package that kills its worker every time it runs."""

from __future__ import annotations

import threading
import time

import pytest

from dispatcher.broker.topology import STATUS_EXCHANGE, STATUS_QUEUE, STATUS_ROUTING_KEY
from dispatcher.catalog import Catalog
from schemas.messages import TaskAssign, TaskFinished, TaskOutcome
from schemas.states import ExecutionStatus
from tests.chaos.checker import read_records
from tests.chaos.cluster import FOLDER, PROJECT, Cluster
from tests.chaos.nemesis import Plan, start_execution
from tests.fixtures.broker import TlsBroker
from tests.fixtures.master import ScriptedWorker
from tests.fixtures.polling import wait_for


def _counter(cluster: Cluster, name: str, **labels: str) -> float:
    wanted = [f"{k}={v}" for k, v in labels.items()]
    return sum(
        value
        for key, value in cluster.scrape().items()
        if key.partition("{")[0] == name and all(w in key for w in wanted)
    )


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_a_forged_report_over_the_broker_is_dropped_and_counted(
    one_worker: tuple[Cluster, Catalog], tls_broker: TlsBroker, vhost: str
) -> None:
    """w2, with its own valid certificate, reports w1's running attempt as succeeded,
    once in its own name and once in w1's: the master refuses the first as not w2's
    attempt (not_holder) and dead-letters the second as forged, the execution keeps
    running on w1 and ends with w1's real outcome."""
    cluster, catalog = one_worker
    execution_id = start_execution(catalog, Plan("Work", 6.0, 0))
    row = wait_for(
        lambda: (r := catalog.get_execution(execution_id)).status is ExecutionStatus.RUNNING and r,
        60,
        "the execution to run on w1",
    )
    assert row.worker_agent_id == "w1"
    assert row.task_id is not None
    forged_in_own_name = _counter(
        cluster, "scaleout_status_reports_total", type="task.finished", outcome="not_holder"
    )
    forged_body = _counter(
        cluster, "scaleout_dead_letters_total", queue=STATUS_QUEUE, reason="forged_sender"
    )
    rogue = ScriptedWorker("w2", tls_broker.settings_for("w2", vhost))
    try:
        task = TaskAssign(
            task_id=row.task_id,
            attempt=row.attempt,
            execution_id=execution_id,
            worker_id="w1",
            folder=FOLDER,
            project=PROJECT,
            package="Work",
            project_lsn=1,
            project_hash="0" * 64,
            lease_expires_at=row.created_time,
        )
        rogue.finished(task, TaskOutcome.SUCCEEDED)  # body: w2; the catalog: not its attempt
        in_w1s_name = TaskFinished(
            task_id=task.task_id,
            attempt=task.attempt,
            execution_id=execution_id,
            worker_id="w1",
            outcome=TaskOutcome.SUCCEEDED,
        )  # body: w1; the broker: w2
        rogue.publisher.publish(STATUS_EXCHANGE, STATUS_ROUTING_KEY, in_w1s_name)
    finally:
        rogue.close()
    wait_for(
        lambda: (
            _counter(
                cluster,
                "scaleout_status_reports_total",
                type="task.finished",
                outcome="not_holder",
            )
            == forged_in_own_name + 1
        ),
        30,
        "the master to count w2's report on w1's attempt as not_holder",
    )
    wait_for(
        lambda: (
            _counter(
                cluster, "scaleout_dead_letters_total", queue=STATUS_QUEUE, reason="forged_sender"
            )
            == forged_body + 1
        ),
        30,
        "the master to dead-letter the report whose body names w1",
    )
    assert catalog.get_execution(execution_id).status is ExecutionStatus.RUNNING
    done = wait_for(
        lambda: (r := catalog.get_execution(execution_id)).status.is_terminal and r,
        60,
        "the execution to end",
    )
    assert (done.status, done.worker_agent_id) == (ExecutionStatus.SUCCEEDED, "w1")
    effects = [r for r in read_records(cluster.records_dir / "records.jsonl") if r.kind == "effect"]
    assert [(r.worker, r.attempt) for r in effects] == [("w1", row.attempt)]


@pytest.mark.chaos
@pytest.mark.timeout(300)
def test_a_poison_package_ends_terminal_and_does_not_loop(
    two_workers: tuple[Cluster, Catalog],
) -> None:
    """A package that SIGKILLs its worker every time ends its execution terminal (failed or
    ended unexpectedly) after its attempts, while a supervisor keeps restarting the
    workers; how many times it ran is printed (lease expiry vs. the delivery limit)."""
    cluster, catalog = two_workers
    stop = threading.Event()
    restarts: list[str] = []

    def supervise() -> None:  # what systemd would do: restart a dead worker after 1 s
        while not stop.wait(0.3):
            for name, service in cluster.workers.items():
                if not service.alive():
                    time.sleep(1.0)
                    service.start()
                    restarts.append(name)

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    try:
        execution_id = start_execution(catalog, Plan("Poison", 0.0, 1))
        row = wait_for(
            lambda: (r := catalog.get_execution(execution_id)).status.is_terminal and r,
            200,
            "the poison execution to end",
        )
    finally:
        stop.set()
        supervisor.join(10)
    runs = [r for r in read_records(cluster.records_dir / "records.jsonl") if r.kind == "poison"]
    by_attempt: dict[int, int] = {}
    for record in runs:
        by_attempt[record.attempt] = by_attempt.get(record.attempt, 0) + 1
    print(
        f"\npoison: execution {execution_id} ended {row.status.label} after "
        f"{row.executed_count} counted attempts; runs by attempt {by_attempt}; "
        f"worker restarts {len(restarts)}"
    )
    assert row.status in {ExecutionStatus.FAILED, ExecutionStatus.ENDED_UNEXPECTEDLY}
    assert row.executed_count <= 2
    # Each attempt may be redelivered up to the queue's delivery limit (10) before the
    # lease gives it up: never more than that per attempt.
    assert all(count <= 11 for count in by_attempt.values()), by_attempt
