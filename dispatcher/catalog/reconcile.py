"""Status reports from workers, applied in one transaction per batch.

The batch's tasks are read (and locked, in task_id order) once; each report is classified
against the attempt it names, on that locked copy, and when it still applies its fenced
writes are collected; they are written at the end with one executemany per statement
(:class:`BatchedWrites`), so a batch costs a handful of statements, not several per report.
Reports that do not apply change nothing and say why (:class:`ReportOutcome`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx, to_db, utc
from dispatcher.catalog.records import ReportOutcome, ReportResult
from dispatcher.catalog.state import (
    BatchedWrites,
    TaskRow,
    add_message,
    among_states,
    by_attempt,
    load_tasks,
    requeue_values,
)
from dispatcher.catalog.tables import Tables
from schemas.messages import (
    PROGRESS_MESSAGE_MAX_CHARS,
    LogEntry,
    StatusReport,
    TaskFinished,
    TaskLog,
    TaskOutcome,
    TaskProgress,
)
from schemas.states import (
    LEASED_TASK_STATES,
    TRANSITIONS,
    ExecutionStatus,
    TaskEvent,
    TaskState,
    can_apply,
)

logger = logging.getLogger(__name__)
DEFAULT_LEASE_S = 60.0
ERROR_MESSAGE = 120
SOURCE_ISSERVEREXEC = 20
LOG_CHUNK = 400
"""Log reports per dedupe query: 4 parameters each stays under SQL Server's 2100."""


@dataclass(slots=True)
class AttemptInfo:
    worker_agent_id: str
    outcome: str | None
    started_at: datetime | None = None


@dataclass(slots=True)
class Batch:
    tx: Tx
    tasks: dict[uuid.UUID, TaskRow]
    attempts: dict[tuple[uuid.UUID, int], AttemptInfo]
    lease_s: dict[str, float]
    writes: BatchedWrites
    renewals: dict[tuple[uuid.UUID, int], dict[str, object]] = field(default_factory=dict)
    """Lease renewals from progress reports, written in one executemany at the end."""
    progress: dict[tuple[uuid.UUID, int], dict[str, object]] = field(default_factory=dict)
    """The latest percent and message per attempt, written with the renewals."""
    lines: list[dict[str, object]] = field(default_factory=list)
    """Log lines to insert in one executemany at the end."""
    stored: set[tuple[uuid.UUID, int, int]] = field(default_factory=set)


def apply_status_reports(tx: Tx, reports: Sequence[tuple[StatusReport, str]]) -> list[ReportResult]:
    """One ReportResult per report, in order; all writes in the caller's transaction."""
    if not reports:
        return []
    ids = {report.task_id for report, _ in reports}
    batch = Batch(
        tx=tx,
        tasks=load_tasks(tx, ids, lock=True, names=True),
        attempts=_attempts(tx, ids),
        lease_s=_lease_intervals(tx, {sender for _, sender in reports}),
        writes=BatchedWrites(tx),
        stored=_stored_lines(tx, [log for r, _ in reports if (log := _log_part(r)) is not None]),
    )
    results = [_apply(batch, report, sender) for report, sender in reports]
    _flush(batch)
    return results


@dataclass(frozen=True, slots=True)
class Lines:
    """The log lines one report carries, for one attempt."""

    task_id: uuid.UUID
    attempt: int
    entries: tuple[LogEntry, ...]


def _log_part(report: StatusReport) -> Lines | None:
    """The log lines a report carries: a task.log's, or a task.finished's last lines."""
    if isinstance(report, TaskLog | TaskFinished) and report.entries:
        return Lines(report.task_id, report.attempt, report.entries)
    return None


def _stored_lines(tx: Tx, logs: Sequence[Lines]) -> set[tuple[uuid.UUID, int, int]]:
    """Which of the batch's log lines are stored already: one query per chunk of reports."""
    stored: set[tuple[uuid.UUID, int, int]] = set()
    for start in range(0, len(logs), LOG_CHUNK):
        chunk = logs[start : start + LOG_CHUNK]
        # Padded to a few sizes by repeating the last range (an OR does not mind), so a
        # handful of statements is built and compiled once, not one per batch size.
        ranges = _padded(len(chunk))
        params: dict[str, object] = {}
        for i in range(ranges):
            log = chunk[min(i, len(chunk) - 1)]
            seqs = [e.seq for e in log.entries]
            params |= {f"t{i}": log.task_id, f"a{i}": log.attempt}
            params |= {f"lo{i}": min(seqs), f"hi{i}": max(seqs)}
        query = _stored_query(tx.t, ranges)
        stored |= {(row.task_id, row.attempt, row.seq) for row in tx.conn.execute(query, params)}
    return stored


def _padded(count: int) -> int:
    """The next power of two from ``count``, at most LOG_CHUNK."""
    return min(LOG_CHUNK, 1 << max(0, count - 1).bit_length())


@cache
def _stored_query(t: Tables, ranges: int) -> sa.Select[Any]:
    """``SELECT task_id, attempt, seq`` for ``ranges`` (task, attempt, seq range) triples,
    built once per count: building it for every batch cost more than running it, and
    compiling one per batch size was a fifth of the status thread's time."""
    m = t.operation_messages
    return sa.select(m.c.task_id, m.c.attempt, m.c.seq).where(
        sa.or_(
            *(
                sa.and_(
                    m.c.task_id == sa.bindparam(f"t{i}", type_=m.c.task_id.type),
                    m.c.attempt == sa.bindparam(f"a{i}", type_=m.c.attempt.type),
                    m.c.seq.between(sa.bindparam(f"lo{i}"), sa.bindparam(f"hi{i}")),
                )
                for i in range(ranges)
            )
        )
    )


def _flush(batch: Batch) -> None:
    """The batch's moves, then renewals and log lines, each in one statement (executemany)."""
    batch.writes.write()
    tx = batch.tx
    if batch.renewals:
        tx.conn.execute(_renew_statement(tx.t), list(batch.renewals.values()))
    if batch.progress:
        tx.conn.execute(_progress_statement(tx.t), list(batch.progress.values()))
    if batch.lines:
        tx.conn.execute(sa.insert(tx.t.operation_messages), batch.lines)


@cache
def _renew_statement(t: Tables) -> sa.Update:
    tasks = t.tasks
    return (
        sa.update(tasks)
        .where(
            *by_attempt(tasks),
            tasks.c.worker_agent_id == sa.bindparam("b_worker"),
            among_states(tasks.c.status, LEASED_TASK_STATES),
        )
        .values(expires_at=sa.bindparam("b_expires", type_=tasks.c.expires_at.type))
    )


@cache
def _progress_statement(t: Tables) -> sa.Update:
    """The attempt's progress columns. Fenced by attempt and holder only, not by the task's
    state: the report was judged current on the locked row, in order, and a task.finished
    later in the same batch must not undo the progress it reported first."""
    a = t.task_attempts
    return (
        sa.update(a)
        .where(*by_attempt(a), a.c.worker_agent_id == sa.bindparam("b_worker"))
        .values(
            progress_percent=sa.bindparam("b_percent", type_=a.c.progress_percent.type),
            progress_message=sa.bindparam("b_message", type_=a.c.progress_message.type),
            progress_time=sa.bindparam("b_time", type_=a.c.progress_time.type),
        )
    )


def _attempts(tx: Tx, ids: set[uuid.UUID]) -> dict[tuple[uuid.UUID, int], AttemptInfo]:
    rows = tx.conn.execute(_attempts_query(tx.t), {"ids": sorted(ids)})
    return {
        (row.task_id, row.attempt): AttemptInfo(row.worker_agent_id, row.outcome, row.started_at)
        for row in rows
    }


@cache
def _attempts_query(t: Tables) -> sa.Select[Any]:
    a = t.task_attempts
    return sa.select(
        a.c.task_id, a.c.attempt, a.c.worker_agent_id, a.c.outcome, a.c.started_at
    ).where(a.c.task_id.in_(sa.bindparam("ids", expanding=True)))


def _lease_intervals(tx: Tx, senders: set[str]) -> dict[str, float]:
    rows = tx.conn.execute(_intervals_query(tx.t), {"ids": sorted(senders)})
    return {row.worker_agent_id: float(row.lease_interval_s) for row in rows}


@cache
def _intervals_query(t: Tables) -> sa.Select[Any]:
    w = t.worker_agents
    return sa.select(w.c.worker_agent_id, w.c.lease_interval_s).where(
        w.c.worker_agent_id.in_(sa.bindparam("ids", expanding=True))
    )


def _apply(batch: Batch, report: StatusReport, sender: str) -> ReportResult:
    refused = _check_sender(batch, report, sender)
    if refused is not None:
        if refused is ReportOutcome.NOT_HOLDER:
            logger.warning(
                "catalog.report_not_holder",
                extra={"task_id": str(report.task_id), "attempt": report.attempt, "sender": sender},
            )
        return ReportResult(refused)
    if isinstance(report, TaskLog):
        return _log(batch, Lines(report.task_id, report.attempt, report.entries))
    if isinstance(report, TaskFinished) and (lines := _log_part(report)) is not None:
        _log(batch, lines)  # stored whatever becomes of the outcome, as a task.log would be
    row = batch.tasks[report.task_id]
    if report.attempt < row.attempt:
        return ReportResult(ReportOutcome.STALE, row.status)
    if isinstance(report, TaskProgress):
        return _progress(batch, row, report, sender)
    if isinstance(report, TaskFinished):
        return _finished(batch, row, report, sender)
    return _started(batch, row, report.machine_name, sender)


def _check_sender(batch: Batch, report: StatusReport, sender: str) -> ReportOutcome | None:
    """Why the report cannot be about an attempt the sender held, or None if it can."""
    if report.task_id not in batch.tasks:
        return ReportOutcome.UNKNOWN_TASK
    info = batch.attempts.get((report.task_id, report.attempt))
    if info is None:
        return ReportOutcome.UNKNOWN_ATTEMPT
    if info.worker_agent_id != sender:
        return ReportOutcome.NOT_HOLDER
    return None


def _lease_end(batch: Batch, sender: str) -> object:
    return batch.tx.now + timedelta(seconds=batch.lease_s.get(sender, DEFAULT_LEASE_S))


def _started(batch: Batch, row: TaskRow, machine_name: str, sender: str) -> ReportResult:
    if row.status is TaskState.RUNNING:
        return ReportResult(ReportOutcome.DUPLICATE, row.status)
    if not can_apply(TaskEvent.START, row.status) or row.worker_agent_id != sender:
        return ReportResult(ReportOutcome.STALE, row.status)
    counted = row.executed_count + 1
    values = {"executed_count": counted, "expires_at": _lease_end(batch, sender)}
    batch.writes.move(TaskEvent.START, row.task_id, row.attempt, values, worker=sender)
    batch.writes.start_attempt(row.task_id, row.attempt, machine_name)
    batch.attempts[(row.task_id, row.attempt)].started_at = batch.tx.now  # as written at the end
    row.status, row.executed_count = TaskState.RUNNING, counted
    status = batch.writes.mirror(
        row.execution_id,
        row.status,
        cancel_requested=row.is_cancelled,
        worker_agent_id=sender,
        executed_count=counted,
        machine_name=machine_name,
    )
    return ReportResult(
        ReportOutcome.APPLIED, row.status, status, dispatch_latency_s=_since_queued(batch.tx, row)
    )


def _since_queued(tx: Tx, row: TaskRow) -> float | None:
    """Seconds from the task becoming pending (start_execution or a requeue) to now."""
    if row.ready_for_dispatch_time is None:
        return None
    return max(0.0, (utc(tx.now) - utc(row.ready_for_dispatch_time)).total_seconds())


def _progress(batch: Batch, row: TaskRow, report: TaskProgress, sender: str) -> ReportResult:
    """Renew the current attempt's lease and keep its percent and message; no state
    changes. A report with neither is a keep-alive: it renews and stores nothing."""
    if not row.status.holds_lease or row.worker_agent_id != sender:
        return ReportResult(ReportOutcome.STALE, row.status)
    # The row is locked for this transaction, so the fenced write at the end will apply.
    key = (row.task_id, row.attempt)
    fence = {"b_task": row.task_id, "b_attempt": row.attempt, "b_worker": sender}
    batch.renewals[key] = {**fence, "b_expires": _lease_end(batch, sender)}
    if report.percent is not None or report.message:
        batch.progress[key] = {  # a later report of the batch replaces this one
            **fence,
            "b_percent": report.percent,
            "b_message": report.message[:PROGRESS_MESSAGE_MAX_CHARS],
            "b_time": batch.tx.now,
        }
    return ReportResult(ReportOutcome.APPLIED, row.status)


def _finish_event(outcome: TaskOutcome, row: TaskRow, counted: int) -> TaskEvent:
    if outcome is TaskOutcome.SUCCEEDED:
        return TaskEvent.SUCCEED
    if outcome is TaskOutcome.CANCELED:
        return TaskEvent.CANCEL
    retry = counted < row.max_executed_count and not row.is_cancelled
    return TaskEvent.RETRY if retry else TaskEvent.FAIL


def _finished(batch: Batch, row: TaskRow, report: TaskFinished, sender: str) -> ReportResult:
    info = batch.attempts[(row.task_id, row.attempt)]
    if info.outcome == report.outcome.value:
        return ReportResult(ReportOutcome.DUPLICATE, row.status)
    # A finished report for an attempt whose `started` was lost still counts the attempt.
    counted = row.executed_count + (1 if row.status is TaskState.DISPATCHED else 0)
    event = _finish_event(report.outcome, row, counted)
    if not can_apply(event, row.status) or row.worker_agent_id != sender:
        return ReportResult(ReportOutcome.STALE, row.status)
    tx = batch.tx
    values: dict[str, object] = {"executed_count": counted, "cancel_sent": True}
    if event is TaskEvent.RETRY:
        values.update(requeue_values(tx), cancel_sent=False)
    batch.writes.move(event, row.task_id, row.attempt, values, worker=sender)
    row.status, row.executed_count = TRANSITIONS[event].target, counted
    if event is TaskEvent.RETRY:
        row.worker_agent_id = None
    info.outcome = report.outcome.value
    status = _record_end(batch, row, report, sender)
    return ReportResult(
        ReportOutcome.APPLIED,
        row.status,
        status,
        event is TaskEvent.RETRY,
        project_name=row.project_name,
        package_name=row.package_name,
        run_s=_run_seconds(batch.tx, info),
    )


def _run_seconds(tx: Tx, info: AttemptInfo) -> float | None:
    """The attempt's run time so far: from its `started` recorded (None if that was lost)."""
    if info.started_at is None:
        return None
    return max(0.0, (utc(tx.now) - utc(info.started_at)).total_seconds())


def _record_end(batch: Batch, row: TaskRow, report: TaskFinished, sender: str) -> ExecutionStatus:
    """Close the attempt, keep its error as a message, mirror the execution's status."""
    error = report.error or None
    batch.writes.close_attempt(
        row.task_id, row.attempt, report.outcome.value, exit_code=report.exit_code, error=error
    )
    _record_failure(batch.tx, row, report)
    return batch.writes.mirror(
        row.execution_id,
        row.status,
        cancel_requested=row.is_cancelled,
        worker_agent_id=sender,
        executed_count=row.executed_count,
    )


def _record_failure(tx: Tx, row: TaskRow, report: TaskFinished) -> None:
    if report.outcome is not TaskOutcome.FAILED and not report.error:
        return
    text = report.error or f"attempt {row.attempt} failed with exit code {report.exit_code}"
    add_message(tx, row.execution_id, ERROR_MESSAGE, text, task_id=row.task_id, attempt=row.attempt)


def _log(batch: Batch, report: Lines) -> ReportResult:
    """Store the lines not stored yet; (task_id, attempt, seq) makes a line unique."""
    tx, key = batch.tx, (report.task_id, report.attempt)
    entries = {e.seq: e for e in report.entries if (*key, e.seq) not in batch.stored}
    if not entries:
        return ReportResult(ReportOutcome.DUPLICATE)
    batch.stored |= {(*key, seq) for seq in entries}
    batch.lines += [
        {
            "operation_id": batch.tasks[report.task_id].execution_id,
            "message_time": to_db(tx, entry.time),
            "message_type": entry.message_type,
            "message_source_type": SOURCE_ISSERVEREXEC,
            "message": entry.message,
            "task_id": report.task_id,
            "attempt": report.attempt,
            "seq": entry.seq,
            "message_source_name": entry.source,
        }
        for entry in entries.values()
    ]
    return ReportResult(ReportOutcome.APPLIED)
