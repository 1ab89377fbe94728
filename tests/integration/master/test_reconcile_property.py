"""Property: whatever order, duplication or lateness status reports arrive in, a task ends
with exactly one terminal outcome, that of its newest attempt, and never moves backwards.

Runs the real catalog (SQLite file and PostgreSQL) under hypothesis' stateful testing: the
rules claim attempts, deliver any generated report of any attempt (again and again), and
the invariants check after every step that the task's attempt never decreases and a
terminal state is never left.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dispatcher.catalog import Catalog
from schemas.messages import AgentHeartbeat, StatusReport, TaskFinished, TaskOutcome, TaskStarted
from schemas.states import ExecutionStatus, TaskState, execution_status_for
from tests.fixtures.catalog import deploy_sample

WORKERS = ("w1", "w2")
RETRY_COUNT = 2

_TERMINAL_FOR = {
    TaskOutcome.SUCCEEDED: TaskState.SUCCEEDED,
    TaskOutcome.CANCELED: TaskState.CANCELED,
    TaskOutcome.FAILED: TaskState.FAILED,
}


@dataclass(frozen=True)
class Sent:
    report: StatusReport
    sender: str


def _online(catalog: Catalog, worker: str) -> None:
    beat = AgentHeartbeat(worker_id=worker, lease_interval_s=600, max_task_count=1000)
    catalog.record_heartbeat(beat, worker)


class Reconciliation(RuleBasedStateMachine):
    catalog: Catalog

    def __init__(self) -> None:
        super().__init__()
        self.pool: list[Sent] = []
        self.last_attempt = 0
        self.terminal: TaskState | None = None
        self.outcomes: dict[int, TaskOutcome] = {}

    @initialize()
    def start(self) -> None:
        for worker in WORKERS:
            _online(self.catalog, worker)
            self.catalog.enable_worker_agent(worker)
        deploy_sample(self.catalog)
        folder, project, package = "Finance", "Sales", "Load"
        self.execution_id = self.catalog.create_execution(folder, project, package)
        self.catalog.start_execution(self.execution_id, retry_count=RETRY_COUNT)

    @rule(outcome=st.sampled_from(list(TaskOutcome)))
    def claim(self, outcome: TaskOutcome) -> None:
        for worker in WORKERS:
            _online(self.catalog, worker)
        claimed = [a for a in self.catalog.claim_tasks(10) if a.execution_id == self.execution_id]
        for a in claimed:
            about = {
                "task_id": a.task_id,
                "attempt": a.attempt,
                "execution_id": a.execution_id,
                "worker_id": a.worker_id,
            }
            self.outcomes[a.attempt] = outcome
            self.pool.append(Sent(TaskStarted(**about), a.worker_id))
            self.pool.append(Sent(TaskFinished(**about, outcome=outcome), a.worker_id))

    @precondition(lambda self: self.pool)
    @rule(data=st.data(), keep=st.booleans())
    def deliver(self, data: st.DataObject, keep: bool) -> None:
        index = data.draw(st.integers(0, len(self.pool) - 1))
        sent = self.pool[index] if keep else self.pool.pop(index)
        self.catalog.apply_status_reports([(sent.report, sent.sender)])

    @precondition(lambda self: self.pool)
    @rule(data=st.data())
    def forge(self, data: st.DataObject) -> None:
        sent = data.draw(st.sampled_from(self.pool))
        other = next(w for w in WORKERS if w != sent.sender)
        forged = sent.report.model_copy(update={"worker_id": other, "message_id": uuid.uuid4()})
        self.catalog.apply_status_reports([(forged, other)])

    @invariant()
    def never_backwards(self) -> None:
        if not hasattr(self, "execution_id"):
            return
        row = self.catalog.get_execution(self.execution_id)
        assert row.attempt >= self.last_attempt, "the attempt number went down"
        self.last_attempt = row.attempt
        assert row.task_state is not None
        if self.terminal is not None:
            assert row.task_state is self.terminal, "a terminal task moved again"
        elif row.task_state.is_terminal:
            self.terminal = row.task_state
            newest = max(self.outcomes)
            assert row.attempt == newest, "an older attempt decided the outcome"
            assert row.task_state is _TERMINAL_FOR[self.outcomes[newest]]
        expected = execution_status_for(row.task_state, cancel_requested=False)
        if row.status is not ExecutionStatus.STOPPING:
            assert row.status is expected


def test_reconciliation_property(catalog: Catalog) -> None:
    """Any interleaving of duplicated, late, forged and out-of-order reports is safe."""
    Reconciliation.catalog = catalog
    runner = Reconciliation.TestCase
    runner.settings = settings(
        max_examples=25,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    runner().runTest()
