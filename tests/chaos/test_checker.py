"""The chaos checker's rules on hand-made histories: it must see each anomaly it counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatcher.catalog.records import ExecutionRow
from schemas.states import ExecutionStatus
from tests.chaos.checker import Checker, Fault, Kill, Record, Undone, read_records

T0 = 1_000.0


def row(
    execution_id: int,
    status: ExecutionStatus,
    task_id: uuid.UUID,
    attempt: int = 1,
    worker: str | None = "w1",
    *,
    anywhere: bool = True,
) -> ExecutionRow:
    return ExecutionRow(
        execution_id=execution_id,
        folder_name="Chaos",
        project_name="Chaos",
        package_name="Work",
        project_lsn=1,
        status=status,
        created_time=datetime.now(UTC),
        start_time=None,
        end_time=None,
        worker_agent_id=worker,
        executed_count=attempt,
        max_executed_count=3,
        use32bitruntime=False,
        runinscaleout=True,
        useanyworker=anywhere,
        task_id=task_id,
        attempt=attempt,
    )


def rec(kind: str, t: float, task: uuid.UUID, attempt: int, worker: str, execution: int) -> Record:
    return Record(kind, T0 + t, str(task), attempt, worker, execution)


def ran(
    task: uuid.UUID, attempt: int, worker: str, execution: int, begin: float, end: float
) -> list[Record]:
    return [
        rec("begin", begin, task, attempt, worker, execution),
        rec("effect", end, task, attempt, worker, execution),
    ]


CHECKER = Checker(faults=(), kills=(), grace_s=5.0)


def test_a_clean_history_has_no_anomaly() -> None:
    """One effect from the succeeded attempt, and a failed run with none: all zero."""
    a, b = uuid.uuid4(), uuid.uuid4()
    records = [
        *ran(a, 1, "w1", 1, 0, 1),
        rec("begin", 0, b, 1, "w2", 2),
        rec("fail", 1, b, 1, "w2", 2),
    ]
    verdict = CHECKER.check(
        [row(1, ExecutionStatus.SUCCEEDED, a), row(2, ExecutionStatus.FAILED, b, worker="w2")],
        records,
    )
    assert (verdict.executions, verdict.lost, verdict.duplicated_effect, verdict.wrong_status) == (
        2,
        0,
        0,
        0,
    )


def test_a_running_execution_is_lost() -> None:
    """An execution that is not terminal at the end counts as lost."""
    verdict = CHECKER.check([row(1, ExecutionStatus.RUNNING, uuid.uuid4())], [])
    assert verdict.lost == 1


def test_success_without_the_attempts_effect_is_wrong_status() -> None:
    """Succeeded, but only an older attempt (or another worker) recorded an effect."""
    a = uuid.uuid4()
    verdict = CHECKER.check(
        [row(1, ExecutionStatus.SUCCEEDED, a, attempt=2)], ran(a, 1, "w1", 1, 0, 1)
    )
    assert verdict.wrong_status == 1


def test_two_effects_with_no_fault_are_a_duplicated_effect() -> None:
    """A zombie effect with no fault near it means a healthy attempt was run twice."""
    a = uuid.uuid4()
    records = ran(a, 1, "w1", 1, 0, 1) + ran(a, 2, "w2", 1, 10, 11)
    verdict = CHECKER.check([row(1, ExecutionStatus.SUCCEEDED, a, attempt=2, worker="w2")], records)
    assert verdict.duplicated_effect == 1


def test_a_zombie_effect_of_a_faulted_worker_is_allowed() -> None:
    """The same history is allowed when w1 was stopped while its attempt ran."""
    a = uuid.uuid4()
    records = ran(a, 1, "w1", 1, 0, 1) + ran(a, 2, "w2", 1, 10, 11)
    checker = Checker(
        faults=(Fault("worker_stopped", T0 + 0.5, T0 + 6, "w1"),), kills=(), grace_s=5
    )
    verdict = checker.check([row(1, ExecutionStatus.SUCCEEDED, a, attempt=2, worker="w2")], records)
    assert (verdict.duplicated_effect, dict(verdict.zombie_effects)) == (0, {"worker_stopped": 1})


def test_a_fault_on_another_worker_excuses_nothing() -> None:
    """A fault on w3 does not excuse w1's zombie effect."""
    a = uuid.uuid4()
    records = ran(a, 1, "w1", 1, 0, 1) + ran(a, 2, "w2", 1, 10, 11)
    checker = Checker(faults=(Fault("worker_cut", T0, T0 + 6, "w3"),), kills=(), grace_s=5)
    verdict = checker.check([row(1, ExecutionStatus.SUCCEEDED, a, attempt=2, worker="w2")], records)
    assert verdict.duplicated_effect == 1


def test_a_lone_unacknowledged_effect_is_wrong_status() -> None:
    """Ended unexpectedly with an effect and no fault: the catalog disagrees with the work."""
    a = uuid.uuid4()
    verdict = CHECKER.check(
        [row(1, ExecutionStatus.ENDED_UNEXPECTEDLY, a)], ran(a, 1, "w1", 1, 0, 1)
    )
    assert verdict.wrong_status == 1


def test_an_effect_of_another_execution_is_wrong_status() -> None:
    """A record whose execution parameter names another execution is wrong."""
    a = uuid.uuid4()
    verdict = CHECKER.check([row(1, ExecutionStatus.SUCCEEDED, a)], ran(a, 1, "w1", 99, 0, 1))
    assert verdict.wrong_status == 1


def test_recovery_is_from_the_kill_to_the_next_attempt_elsewhere() -> None:
    """max_recovery_s: kill at 2 s, the next attempt begins on w2 at 6.5 s -> 4.5 s."""
    a = uuid.uuid4()
    records = [rec("begin", 0, a, 1, "w1", 1), *ran(a, 2, "w2", 1, 6.5, 7)]
    checker = Checker(faults=(), kills=(Kill("w1", T0 + 2),), grace_s=5)
    verdict = checker.check([row(1, ExecutionStatus.SUCCEEDED, a, attempt=2, worker="w2")], records)
    assert verdict.recoveries == [4.5]
    assert verdict.line().endswith("max_recovery_s=4.5")


def test_torn_lines_are_skipped(tmp_path: Path) -> None:
    """A line cut short by a kill is skipped; the whole ones are read."""
    path = tmp_path / "records.jsonl"
    path.write_text(
        '{"kind": "effect", "t": 1.0, "task_id": "x", "attempt": 1, "worker": "w1", '
        '"execution": 3}\n'
        '{"kind": "eff'
    )
    assert [r.kind for r in read_records(path)] == ["effect"]


def test_each_fault_recovers_when_work_begins_again_after_it_was_undone() -> None:
    """The master resumed at 3 s and the next package began at 4.2 s (1.2 s); w2 came
    back at 5 s and began again at 9 s (4 s), though w1 began at 6 s; a fault after
    which nothing began has no figure. An undone fault excuses nothing."""
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    records = [
        *ran(a, 1, "w1", 1, 4.2, 4.5),
        *ran(b, 1, "w1", 2, 6, 6.5),
        *ran(c, 1, "w2", 3, 9, 9.5),
    ]
    undone = (
        Undone("master_paused", T0 + 3),
        Undone("worker_stopped", T0 + 5, "w2"),
        Undone("catalog_restarted", T0 + 20),
    )
    checker = Checker(faults=(), kills=(), grace_s=5, undone=undone)
    rows = [
        row(1, ExecutionStatus.SUCCEEDED, a),
        row(2, ExecutionStatus.SUCCEEDED, b),
        row(3, ExecutionStatus.SUCCEEDED, c, worker="w2"),
    ]
    verdict = checker.check(rows, records)
    assert verdict.fault_recovery_s == pytest.approx({"master_paused": 1.2, "worker_stopped": 4.0})
    assert verdict.line().endswith("master_paused_s=1.2 worker_stopped_s=4.0")


def test_an_execution_ended_by_a_master_pause_is_wrong() -> None:
    """A package that succeeded while the master was paused, recorded ended unexpectedly:
    the pause is no excuse (it is an Undone, not a Fault)."""
    a = uuid.uuid4()
    checker = Checker(faults=(), kills=(), grace_s=5, undone=(Undone("master_paused", T0 + 3),))
    verdict = checker.check(
        [row(1, ExecutionStatus.ENDED_UNEXPECTEDLY, a)], ran(a, 1, "w1", 1, 0, 2)
    )
    assert verdict.wrong_status == 1
