"""The control queue's handler: cancels, refused reports and project archive replies
from the master.

Both must come from the master's RabbitMQ user (the AMQP ``user_id``, which the broker
checks against the sender's login); anything else is dead-lettered as forged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dispatcher import metrics
from dispatcher.broker import ACK, Delivery, Disposition, Verdict
from schemas.messages import (
    MAX_ARCHIVE_BODY_BYTES,
    DecodeError,
    ProjectArchive,
    TaskCancel,
    TaskOutcome,
    TaskRefused,
    decode,
)

from .projects import ProjectStore
from .stops import StopCause
from .tasks import Registry

logger = logging.getLogger(__name__)


class ControlHandler:
    """One delivery in, one verdict out; nothing here waits on a package."""

    def __init__(self, registry: Registry, projects: ProjectStore, master_user_id: str) -> None:
        self._registry = registry
        self._projects = projects
        self._master_user_id = master_user_id

    def __call__(self, deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        return [self.handle(delivery) for delivery in deliveries]

    def handle(self, delivery: Delivery) -> Verdict:
        if delivery.user_id != self._master_user_id:
            return _refuse("forged_sender", f"user_id {delivery.user_id!r} is not the master")
        try:
            message = decode(delivery.body, max_bytes=MAX_ARCHIVE_BODY_BYTES)
        except DecodeError as exc:
            return _refuse(exc.reason.value, exc.detail)
        if isinstance(message, TaskCancel):
            self._cancel(message)
        elif isinstance(message, TaskRefused):
            self._refused(message)
        elif isinstance(message, ProjectArchive):
            self._projects.deliver(message)
        else:
            return _refuse("unexpected_type", f"{message.type} on a control queue")
        return ACK

    def _cancel(self, cancel: TaskCancel) -> None:
        key = (cancel.task_id, cancel.attempt)
        run = self._registry.run_of(key)
        if run is not None:
            run.stop(
                TaskOutcome.CANCELED,
                f"canceled by the master ({cancel.reason.value})",
                cause=StopCause.CANCELED,
            )
            return
        if self._registry.cancel_waiting(key):
            logger.info("task.cancel_waiting: %s/%d dropped before it started", *key)
            return
        if self._registry.cancel_unseen(key):  # its assignment may still be on its way
            logger.info("task.cancel_early: %s/%d not taken yet; it will not start", *key)
            return
        logger.info("task.cancel_ignored: %s/%d is not running here", *key)

    def _refused(self, refused: TaskRefused) -> None:
        """The master did not record a report of ours: the catalog does not hold this
        attempt for us, so running it on would be work nobody waits for."""
        metrics.WORKER_REPORTS_REFUSED.labels(reason=refused.reason.value).inc()
        key = (refused.task_id, refused.attempt)
        logger.warning(
            "task.report_refused: %s/%d %s: %s",
            *key,
            refused.report_type,
            refused.reason.value,
            extra={"execution_id": refused.execution_id, "reason": refused.reason.value},
        )
        run = self._registry.run_of(key)
        if run is not None:
            run.stop(
                TaskOutcome.CANCELED,
                f"the master refused its {refused.report_type} ({refused.reason.value})",
                cause=StopCause.REFUSED,
            )
        else:
            self._registry.cancel_waiting(key)


def _refuse(reason: str, detail: str) -> Verdict:
    logger.warning("control.dead_letter: %s: %s", reason, detail)
    return Verdict(Disposition.DEAD_LETTER, f"{reason}: {detail}")
