"""The state machine: what may follow what, and what an execution shows for its task."""

from __future__ import annotations

import pytest

from schemas.states import (
    LEASED_TASK_STATES,
    TERMINAL_TASK_STATES,
    TRANSITIONS,
    ExecutionStatus,
    TaskEvent,
    TaskState,
    can_apply,
    execution_status_for,
)


def test_no_event_leaves_a_terminal_state() -> None:
    """A finished task never moves again, whatever message arrives late."""
    for event, transition in TRANSITIONS.items():
        assert not (transition.sources & TERMINAL_TASK_STATES), event


def test_only_dispatch_leaves_pending_forward() -> None:
    """A pending task can be dispatched or canceled, nothing else."""
    allowed = {e for e in TaskEvent if can_apply(e, TaskState.PENDING)}

    assert allowed == {TaskEvent.DISPATCH, TaskEvent.CANCEL}


def test_started_only_from_dispatched() -> None:
    """A duplicate or late `started` cannot pull a running or finished task back."""
    assert TRANSITIONS[TaskEvent.START].sources == {TaskState.DISPATCHED}


@pytest.mark.parametrize(
    "event",
    [
        TaskEvent.SUCCEED,
        TaskEvent.FAIL,
        TaskEvent.RETRY,
        TaskEvent.EXPIRE_RETRY,
        TaskEvent.EXPIRE_END,
    ],
)
def test_outcomes_need_a_lease(event: TaskEvent) -> None:
    """Outcomes and expiry apply only to an attempt that holds a lease."""
    assert TRANSITIONS[event].sources == LEASED_TASK_STATES


def test_withdraw_only_before_start() -> None:
    """Draining a worker takes back only attempts it has not started."""
    transition = TRANSITIONS[TaskEvent.WITHDRAW]

    assert (transition.sources, transition.target) == (
        frozenset({TaskState.DISPATCHED}),
        TaskState.PENDING,
    )


@pytest.mark.parametrize(
    ("state", "cancel", "expected"),
    [
        (TaskState.PENDING, False, ExecutionStatus.PENDING),
        (TaskState.DISPATCHED, False, ExecutionStatus.PENDING),
        (TaskState.RUNNING, False, ExecutionStatus.RUNNING),
        (TaskState.RUNNING, True, ExecutionStatus.STOPPING),
        (TaskState.SUCCEEDED, False, ExecutionStatus.SUCCEEDED),
        (TaskState.SUCCEEDED, True, ExecutionStatus.SUCCEEDED),
        (TaskState.FAILED, False, ExecutionStatus.FAILED),
        (TaskState.CANCELED, True, ExecutionStatus.CANCELED),
        (TaskState.ENDED_UNEXPECTEDLY, False, ExecutionStatus.ENDED_UNEXPECTEDLY),
    ],
)
def test_execution_status_follows_task(
    state: TaskState, cancel: bool, expected: ExecutionStatus
) -> None:
    """The execution shows SSIS's status code for its task's state."""
    assert execution_status_for(state, cancel_requested=cancel) is expected


def test_ssis_status_codes() -> None:
    """Execution codes are SSIS's documented numbers."""
    assert [s.value for s in ExecutionStatus] == list(range(1, 10))
    assert ExecutionStatus.ENDED_UNEXPECTEDLY.label == "ended unexpectedly"
