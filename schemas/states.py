"""The task and execution state machine: the one place that says what may follow what.

Every catalog write that moves a task names a :class:`TaskEvent`; the catalog turns
``TRANSITIONS[event]`` into ``UPDATE ... WHERE status IN (sources)`` fenced by the attempt,
so a late or duplicated message can never move a task backwards.

Task codes 1-6 follow SSIS's ``internal.tasks.Status`` (1 queued, 2 dispatched, 3 running,
4 failed, 5 succeeded, 6 canceled); 7 is ours, for an attempt that expired with none left.
Execution codes are SSIS's ``catalog.executions.status``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import IntEnum, StrEnum

AttemptKey = tuple[uuid.UUID, int]
"""An attempt's identity, ``(task_id, attempt)``: what every write that moves a task is
fenced by, and what a worker de-duplicates deliveries by."""


class ExecutionStatus(IntEnum):
    """``catalog.executions.status`` as SSIS documents it."""

    CREATED = 1
    RUNNING = 2
    CANCELED = 3
    FAILED = 4
    PENDING = 5
    ENDED_UNEXPECTEDLY = 6
    SUCCEEDED = 7
    STOPPING = 8
    COMPLETED = 9

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_EXECUTION_STATUSES

    @property
    def label(self) -> str:
        """For human text: ``ended unexpectedly``."""
        return self.name.replace("_", " ").lower()

    @property
    def key(self) -> str:
        """For machines: ``ended_unexpectedly``, as the CLI's ``--status`` values and every
        metric's ``status`` label spell it (a label value with a space is awkward in PromQL)."""
        return self.name.lower()


TERMINAL_EXECUTION_STATUSES = frozenset(
    {
        ExecutionStatus.CANCELED,
        ExecutionStatus.FAILED,
        ExecutionStatus.ENDED_UNEXPECTEDLY,
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.COMPLETED,
    }
)


class TaskState(IntEnum):
    """The state of a task (one per execution) in ``internal.tasks``."""

    PENDING = 1
    DISPATCHED = 2
    RUNNING = 3
    FAILED = 4
    SUCCEEDED = 5
    CANCELED = 6
    ENDED_UNEXPECTEDLY = 7

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_TASK_STATES

    @property
    def holds_lease(self) -> bool:
        return self in LEASED_TASK_STATES


TERMINAL_TASK_STATES = frozenset(
    {TaskState.FAILED, TaskState.SUCCEEDED, TaskState.CANCELED, TaskState.ENDED_UNEXPECTEDLY}
)
LEASED_TASK_STATES = frozenset({TaskState.DISPATCHED, TaskState.RUNNING})


class TaskEvent(StrEnum):
    """What can happen to a task; each names one conditional update in the catalog."""

    DISPATCH = "dispatch"  # a new attempt is handed to a worker
    START = "start"  # the worker accepted the attempt and runs it
    SUCCEED = "succeed"
    FAIL = "fail"  # the package failed and no attempts are left
    RETRY = "retry"  # the package failed with attempts left: back to pending
    CANCEL = "cancel"  # the worker confirmed a cancel, or a task not yet started is withdrawn
    EXPIRE_RETRY = "expire_retry"  # the lease lapsed with attempts left
    EXPIRE_END = "expire_end"  # the lease lapsed with none left: ended unexpectedly
    WITHDRAW = "withdraw"  # a dispatched, not started attempt goes back (its worker drained)


@dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[TaskState]
    target: TaskState


_LEASED = LEASED_TASK_STATES

TRANSITIONS: dict[TaskEvent, Transition] = {
    TaskEvent.DISPATCH: Transition(frozenset({TaskState.PENDING}), TaskState.DISPATCHED),
    TaskEvent.START: Transition(frozenset({TaskState.DISPATCHED}), TaskState.RUNNING),
    # A finished report implies the attempt started, even when `started` was lost or late.
    TaskEvent.SUCCEED: Transition(_LEASED, TaskState.SUCCEEDED),
    TaskEvent.FAIL: Transition(_LEASED, TaskState.FAILED),
    TaskEvent.RETRY: Transition(_LEASED, TaskState.PENDING),
    TaskEvent.CANCEL: Transition(_LEASED | {TaskState.PENDING}, TaskState.CANCELED),
    TaskEvent.EXPIRE_RETRY: Transition(_LEASED, TaskState.PENDING),
    TaskEvent.EXPIRE_END: Transition(_LEASED, TaskState.ENDED_UNEXPECTEDLY),
    TaskEvent.WITHDRAW: Transition(frozenset({TaskState.DISPATCHED}), TaskState.PENDING),
}


def can_apply(event: TaskEvent, state: TaskState) -> bool:
    """Whether ``event`` may move a task that is in ``state``."""
    return state in TRANSITIONS[event].sources


def execution_status_for(state: TaskState, *, cancel_requested: bool) -> ExecutionStatus:
    """The execution status that mirrors its task's state.

    A stop that is requested but not yet confirmed shows as *stopping* (8), as in SSIS.
    """
    if state.is_terminal:
        return _TERMINAL_EXECUTION[state]
    if cancel_requested:
        return ExecutionStatus.STOPPING
    if state is TaskState.RUNNING:
        return ExecutionStatus.RUNNING
    return ExecutionStatus.PENDING


_TERMINAL_EXECUTION = {
    TaskState.SUCCEEDED: ExecutionStatus.SUCCEEDED,
    TaskState.FAILED: ExecutionStatus.FAILED,
    TaskState.CANCELED: ExecutionStatus.CANCELED,
    TaskState.ENDED_UNEXPECTEDLY: ExecutionStatus.ENDED_UNEXPECTEDLY,
}
