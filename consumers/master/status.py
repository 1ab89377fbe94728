"""The master's status reconciler: worker reports -> fenced catalog writes.

A batch of deliveries becomes one catalog transaction (``apply_status_reports``); the
deliveries are acked only after it commits (the Consumer applies the verdicts we return).
A report the catalog refuses (stale attempt, a worker reporting another's attempt,
unknown task) is counted, acked and changes nothing: redelivering it would change nothing
either; its sender is told with a ``task.refused`` (consumers.master.replies). Bodies that
are not valid reports are dead-lettered with their reason. The master's own read markers
(dispatcher.horizon) are reported read once the reports before them are committed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from consumers.master.identity import SenderCheck
from consumers.master.refusals import Refusals, discard, forged_detail, report_detail
from consumers.master.replies import RefusalReplies
from consumers.master.verdicts import dead_letter, decode_as
from dispatcher import metrics
from dispatcher.broker import ACK, Delivery, Verdict
from dispatcher.broker.topology import STATUS_QUEUE
from dispatcher.catalog.records import ReportOutcome, ReportResult
from dispatcher.horizon import ignore_markers
from schemas.messages import (
    DecodeReason,
    ReadMarker,
    StatusReport,
    TaskFinished,
    TaskLog,
    TaskProgress,
    TaskStarted,
)

logger = logging.getLogger(__name__)

_REPORT_TYPES = (TaskStarted, TaskProgress, TaskLog, TaskFinished)
_ACCEPTED_TYPES = (*_REPORT_TYPES, ReadMarker)


class ReportSink(Protocol):
    def apply_status_reports(
        self, reports: Sequence[tuple[StatusReport, str]]
    ) -> list[ReportResult]: ...


class StatusHandler:
    """The handler of the ``scaleout.master.status`` consumer."""

    def __init__(
        self,
        catalog: ReportSink,
        *,
        senders: SenderCheck,
        on_capacity: Callable[[], None] = lambda: None,
        refusals: Refusals | None = None,
        replies: RefusalReplies | None = None,
        markers_seen: Callable[[str, ReadMarker], None] | None = None,
    ) -> None:
        self._catalog = catalog
        self._senders = senders
        self._on_capacity = on_capacity
        self._refusals = refusals or discard()
        self._replies = replies
        self._markers_seen = markers_seen or ignore_markers()

    def __call__(self, deliveries: Sequence[Delivery]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(deliveries)
        accepted: list[tuple[int, StatusReport, str]] = []
        markers: list[ReadMarker] = []
        for index, delivery in enumerate(deliveries):
            checked = self._check(delivery)
            if isinstance(checked, Verdict):
                verdicts[index] = checked
            elif isinstance(checked, ReadMarker):
                markers.append(checked)
            else:
                accepted.append((index, *checked))
        if accepted:
            self._apply(accepted)
        for marker in markers:  # after the commit of every report queued before it
            self._markers_seen(STATUS_QUEUE, marker)
        self._refusals.flush()
        return [ACK if verdict is None else verdict for verdict in verdicts]

    def _check(self, delivery: Delivery) -> tuple[StatusReport, str] | ReadMarker | Verdict:
        report = decode_as(STATUS_QUEUE, delivery, _ACCEPTED_TYPES)
        if isinstance(report, Verdict | ReadMarker):
            return report
        assert isinstance(report, _REPORT_TYPES)  # narrows the common base to the union
        sender = self._senders.sender(delivery, report.worker_id)
        if sender is None:
            detail = f"body says {report.worker_id}, broker says {delivery.user_id}"
            forged = forged_detail(report.type, report.worker_id, delivery.user_id)
            self._refusals.note(report.worker_id, DecodeReason.FORGED_SENDER.value, forged)
            return dead_letter(STATUS_QUEUE, delivery, DecodeReason.FORGED_SENDER, detail)
        return report, sender

    def _apply(self, accepted: list[tuple[int, StatusReport, str]]) -> None:
        started = time.perf_counter()
        results = self._catalog.apply_status_reports([(r, s) for _, r, s in accepted])
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        metrics.RECONCILE_SIZE.observe(len(accepted))
        freed = False
        refused: list[tuple[StatusReport, str, ReportOutcome]] = []
        tally: Counter[tuple[str, str]] = Counter()
        for (_, report, sender), result in zip(accepted, results, strict=True):
            tally[report.type, result.outcome.value] += 1
            if result.dispatch_latency_s is not None:
                metrics.DISPATCH_LATENCY.observe(result.dispatch_latency_s)
            if result.retried:
                metrics.ATTEMPTS_REQUEUED.labels(reason="package_failed").inc()
            if isinstance(report, TaskFinished) and result.outcome is ReportOutcome.APPLIED:
                freed = True  # a worker slot is free (and a retry may be pending)
                _count_package_end(report, result)
            if result.outcome not in {ReportOutcome.APPLIED, ReportOutcome.DUPLICATE}:
                _log_refused(report, sender, result)
                outcome = result.outcome.value
                detail = report_detail(report.type, report.execution_id, report.attempt, outcome)
                self._refusals.note(sender, outcome, detail)
                refused.append((report, sender, result.outcome))
        for (report_type, outcome), count in tally.items():  # one labels() per kind
            metrics.REPORTS.labels(type=report_type, outcome=outcome).inc(count)
        if refused and self._replies is not None:
            self._replies.send(refused)
        if freed:
            # Dispatch now rather than at the next poll: without this a busy cluster runs
            # at MaxTaskCount per poll interval (the benchmark's first finding).
            self._on_capacity()


def _count_package_end(report: TaskFinished, result: ReportResult) -> None:
    """The per-package counts of an applied end: the attempt, with its run time, and the
    execution when this ended it (a retried failure leaves it pending)."""
    project, package = result.project_name, result.package_name
    metrics.attempt_ended(project, package, report.outcome.value, result.run_s)
    status = result.execution_status
    if status is not None and status.is_terminal:
        metrics.execution_ended(project, package, status)


def _log_refused(report: StatusReport, sender: str, result: ReportResult) -> None:
    logger.info(
        "status.refused",
        extra={
            "outcome": result.outcome.value,
            "type": report.type,
            "task_id": str(report.task_id),
            "attempt": report.attempt,
            "sender": sender,
        },
    )
