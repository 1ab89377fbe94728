"""One accepted attempt, from its task folder to its ``task.finished`` report.

:func:`prepare` does everything that can refuse the task before it is accepted (package
lookup, parameters, the task folder); :class:`TaskRun` runs the package in a thread of its
own, sends its output as ``task.log`` batches (numbered by ``seq``, cut by size and time)
and reports the outcome. The output also goes to ``TasksRootFolder/<task_id>/<attempt>.log``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from dispatcher import metrics
from dispatcher.broker.topology import STATUS_EXCHANGE, STATUS_ROUTING_KEY
from schemas.messages import (
    LogEntry,
    RunningAttempt,
    TaskAssign,
    TaskFinished,
    TaskLog,
    TaskOutcome,
    TaskProgress,
)
from schemas.project import CallableEntry, PackageSpec
from schemas.states import AttemptKey

from . import marks, threads
from .inprocess import ThreadPackage
from .outbox import Outgoing, Reporter, ReportLost
from .progress import BadProgress, Progress, ProgressThrottle, count_dropped, parse_progress
from .projects import Project
from .runner import (
    MESSAGE_TYPE_ERROR,
    MESSAGE_TYPE_INFO,
    MESSAGE_TYPE_PROGRESS,
    MESSAGE_TYPE_WARNING,
    Launch,
    Line,
    PackageError,
    PackageHandle,
    PackageProcess,
    Parameter,
    build_launch,
    make_line,
    resolve_parameters,
)
from .stops import StopCause, count_stop

if TYPE_CHECKING:
    from .settings import WorkerSettings

logger = logging.getLogger(__name__)

LOG_BATCH_MAX_ENTRIES = 500
LOG_BATCH_MAX_CHARS = 128 * 1024
"""Keeps a task.log body well under the 1 MiB message bound, even fully escaped."""
LOG_BATCH_INTERVAL_S = 0.5
LOCAL_LOG_MAX_BYTES = 64 * 1024 * 1024
_LEVEL_BITS = {
    MESSAGE_TYPE_INFO: 0x02,
    MESSAGE_TYPE_WARNING: 0x04,
    MESSAGE_TYPE_ERROR: 0x08,
    MESSAGE_TYPE_PROGRESS: 0x10,
}


@dataclass(frozen=True, slots=True)
class Prepared:
    workdir: Path | None
    """The task folder; None for an in-process run, which needs none (and no local log:
    its lines are in the catalog), so a benchmark's no-op costs no file system calls."""
    project_root: Path
    package: PackageSpec
    parameters: dict[str, Parameter]
    launch: Launch | None
    """None: a callable run in-process (``runner_mode = "inprocess"``)."""
    notes: tuple[str, ...]


def prepare(settings: WorkerSettings, assign: TaskAssign, project: Project) -> Prepared:
    """Check the assignment against the project and lay out the task folder; raise
    :class:`PackageError` (or ``OSError``) with the reason the task cannot run."""
    package = project.manifest.package(assign.package)
    if package is None:
        msg = f"project {project.manifest.name} has no package {assign.package}"
        raise PackageError(msg)
    parameters, notes = resolve_parameters(project.manifest, package, assign.parameters)
    inprocess = settings.runner_mode == "inprocess" and isinstance(package.entry, CallableEntry)
    launch = None if inprocess else build_launch(package, parameters)
    if inprocess:
        return Prepared(None, project.root, package, parameters, launch, notes)
    workdir = settings.tasks_root_folder / str(assign.task_id) / str(assign.attempt)
    if workdir.exists():  # an earlier run of this attempt (a redelivery after a restart)
        shutil.rmtree(workdir)
    shutil.copytree(project.root, workdir)
    return Prepared(workdir, project.root, package, parameters, launch, notes)


class TaskRun:
    """The thread that runs one attempt's package and reports it."""

    def __init__(
        self,
        settings: WorkerSettings,
        assign: TaskAssign,
        prepared: Prepared,
        reporter: Reporter,
        *,
        on_end: Callable[[AttemptKey], None],
    ) -> None:
        self._settings = settings
        self._assign = assign
        self._prepared = prepared
        self._reporter = reporter
        self._on_end = on_end
        self.key: AttemptKey = (assign.task_id, assign.attempt)
        self.attempt_ref = RunningAttempt(
            task_id=assign.task_id, attempt=assign.attempt, execution_id=assign.execution_id
        )
        self.project_hash = assign.project_hash
        """The project version it runs: the retention sweep keeps it cached meanwhile."""
        self._lock = threading.Lock()
        self._handle: PackageHandle | None = None
        self._stop_reason: tuple[TaskOutcome, str] | None = None
        self._seq = 0
        self._batch: list[LogEntry] = []
        self._batch_chars = 0
        self._batch_since = time.monotonic()
        self._progress = ProgressThrottle(settings.progress_interval_s)
        self._local_log: IO[str] | None = None
        self._local_bytes = 0
        self.ended = threading.Event()

    def start(self) -> None:
        name = f"task-{self._assign.task_id}-{self._assign.attempt}"
        threads.SHARED.spawn(self._run, name)

    def stop(self, outcome: TaskOutcome, reason: str, *, cause: StopCause) -> bool:
        """Kill the package's whole process tree; it is reported with ``outcome`` and
        ``reason`` as its error. False when it was stopping or had ended already."""
        with self._lock:
            if self._stop_reason is not None or self.ended.is_set():
                return False
            if self._handle is not None and self._handle.returncode() is not None:
                return False  # it ended on its own; its real outcome is about to be reported
            self._stop_reason = (outcome, reason)
            handle = self._handle
        count_stop(cause)
        logger.info(
            "task.stopping: %s/%d: %s",
            *self.key,
            reason,
            extra={"task_id": str(self.key[0]), "attempt": self.key[1], "reason": cause.value},
        )
        if handle is not None:
            grace = self._settings.kill_grace_s
            threading.Thread(target=handle.stop, args=(grace,), daemon=True).start()
        return True

    def _run(self) -> None:
        started = time.monotonic()
        metrics.WORKER_TASKS_RUNNING.inc()
        outcome, exit_code, error = TaskOutcome.FAILED, None, ""
        try:
            handle = self._launch()
            if handle is not None:
                self._pump(handle)
                exit_code = handle.returncode()
                outcome, error = self._outcome(exit_code, handle.error_summary())
            else:
                outcome, error = self._outcome(None, "")
        except PackageError as exc:
            error = str(exc)
        except Exception as exc:  # the attempt must be reported whatever went wrong here
            logger.exception("task.run_error: %s/%d", *self.key)
            error = f"worker error while running the package: {type(exc).__name__}: {exc}"
            if self._handle is not None:  # never leave a package running unwatched
                self._handle.stop(0)
        finally:
            metrics.WORKER_TASKS_RUNNING.dec()
            took = time.monotonic() - started
            metrics.WORKER_TASKS_FINISHED.labels(outcome=outcome.value).inc()
            metrics.WORKER_PACKAGE_SECONDS.observe(took)
            self._finish(outcome, exit_code, error, took)

    def _launch(self) -> PackageHandle | None:
        prepared = self._prepared
        if prepared.workdir is not None:
            self._local_log = _open_local_log(prepared.workdir)
        for note in prepared.notes:
            self._add(make_line("agent", note, MESSAGE_TYPE_WARNING))
        handle: PackageHandle
        if prepared.launch is None or prepared.workdir is None:
            assert isinstance(prepared.package.entry, CallableEntry)
            thread_package = ThreadPackage(
                prepared.package.entry, prepared.project_root, prepared.parameters
            )
            handle = thread_package
            starter: Callable[[], object] = thread_package.start
        else:
            mark = marks.attempt_mark(self._settings.package_owner, *self.key)
            process = PackageProcess(prepared.launch, prepared.workdir, owner=mark)
            handle = process
            starter = process.start
        with self._lock:
            if self._stop_reason is not None:
                return None
            try:
                starter()
            except OSError as exc:
                msg = f"cannot start package {prepared.package.name}: {exc}"
                raise PackageError(msg) from None
            self._handle = handle
        self._add(make_line("agent", f"package {prepared.package.name} started, pid {handle.pid}"))
        return handle

    def _pump(self, handle: PackageHandle) -> None:
        """Move output lines into task.log batches until the package and its pipes end."""
        while True:
            lines = handle.next_lines(timeout=0.1, limit=LOG_BATCH_MAX_ENTRIES)
            for line in lines:
                self._add(line)
            if time.monotonic() - self._batch_since >= LOG_BATCH_INTERVAL_S:
                self._flush()
            self._send_progress(self._progress.due())
            if not lines and handle.done():
                return

    def _outcome(self, exit_code: int | None, stderr_tail: str) -> tuple[TaskOutcome, str]:
        with self._lock:
            stop_reason = self._stop_reason
        if stop_reason is not None:
            return stop_reason
        if exit_code == 0:
            return TaskOutcome.SUCCEEDED, ""
        return TaskOutcome.FAILED, stderr_tail or f"package exited with code {exit_code}"

    def _add(self, line: Line) -> None:
        self._write_local(line)
        if line.source != "agent":
            self._note_progress(line.text)
        if not self._settings.task_log_level & _LEVEL_BITS.get(line.message_type, 0x02):
            return
        self._batch.append(
            LogEntry(
                seq=self._seq,
                time=line.time,
                message_type=line.message_type,
                source=line.source,
                message=line.text,
            )
        )
        self._seq += 1
        self._batch_chars += len(line.text)
        if len(self._batch) >= LOG_BATCH_MAX_ENTRIES or self._batch_chars >= LOG_BATCH_MAX_CHARS:
            self._flush()

    def _flush(self) -> None:
        entries = self._take_entries()
        if not entries:
            return
        log = TaskLog(
            task_id=self._assign.task_id,
            attempt=self._assign.attempt,
            execution_id=self._assign.execution_id,
            worker_id=self._settings.worker_id,
            entries=entries,
        )
        self._reporter.submit(Outgoing(STATUS_EXCHANGE, STATUS_ROUTING_KEY, log))

    def _take_entries(self) -> tuple[LogEntry, ...]:
        """The lines batched so far (within the size bounds of one report)."""
        entries = tuple(self._batch)
        self._batch, self._batch_chars = [], 0
        self._batch_since = time.monotonic()
        return entries

    def _note_progress(self, text: str) -> None:
        """A package's progress line, handed to the rate limit; a bad one is counted."""
        try:
            progress = parse_progress(text)
        except BadProgress as exc:
            count_dropped(exc.reason)
            return
        if progress is not None:
            self._send_progress(self._progress.offer(progress))

    def _send_progress(self, progress: Progress | None) -> None:
        """Submit a ``task.progress``, not durable: a value the broker does not take is
        dropped (counted ``unsent``), never cached, since a newer one replaces it anyway."""
        if progress is None:
            return
        report = TaskProgress(
            task_id=self._assign.task_id,
            attempt=self._assign.attempt,
            execution_id=self._assign.execution_id,
            worker_id=self._settings.worker_id,
            percent=progress.percent,
            message=progress.message,
        )
        metrics.WORKER_PROGRESS_SENT.inc()
        future = self._reporter.submit(
            Outgoing(STATUS_EXCHANGE, STATUS_ROUTING_KEY, report), durable=False
        )
        future.add_done_callback(_count_unsent)

    def _write_local(self, line: Line) -> None:
        if self._local_log is None or self._local_bytes > LOCAL_LOG_MAX_BYTES:
            return
        text = f"{line.time.isoformat()} {line.source} {line.text}\n"
        self._local_bytes += len(text)
        self._local_log.write(text)

    def _finish(self, outcome: TaskOutcome, exit_code: int | None, error: str, took: float) -> None:
        try:
            self._send_progress(self._progress.final())  # before finished, so it still applies
            self._add(make_line("agent", f"package ended: {outcome.value}, exit code {exit_code}"))
            finished = TaskFinished(
                task_id=self._assign.task_id,
                attempt=self._assign.attempt,
                execution_id=self._assign.execution_id,
                worker_id=self._settings.worker_id,
                outcome=outcome,
                exit_code=exit_code,
                error=error[-4000:],
                duration_s=round(took, 3),
                entries=self._take_entries(),  # the last lines ride with the outcome
            )
            try:
                confirmed = self._reporter.submit(
                    Outgoing(STATUS_EXCHANGE, STATUS_ROUTING_KEY, finished)
                ).result()
            except ReportLost:  # the reporter logged and counted it (outbox.lost)
                logger.error("task.report_lost: %s/%d %s", *self.key, outcome.value)
                return
            # Per-execution lines are DEBUG when all went well: at a thousand executions a
            # second an INFO line each is a measurable share of the worker's CPU.
            level = (
                logging.DEBUG if confirmed and outcome is TaskOutcome.SUCCEEDED else logging.INFO
            )
            logger.log(
                level,
                "task.finished: %s/%d %s exit %s in %.1f s%s",
                *self.key,
                outcome.value,
                exit_code,
                took,
                "" if confirmed else " (report cached until the broker is back)",
                extra={"outcome": outcome.value},
            )
        finally:
            if self._local_log is not None:
                self._local_log.close()
            with self._lock:
                self.ended.set()
            self._on_end(self.key)


def _count_unsent(future: Future[bool]) -> None:
    if future.exception() is not None:
        count_dropped("unsent")


def _open_local_log(workdir: Path) -> IO[str] | None:
    try:
        return (workdir.parent / f"{workdir.name}.log").open("a", encoding="utf-8")
    except OSError:
        logger.warning("task.local_log_unavailable: %s", workdir)
        return None
