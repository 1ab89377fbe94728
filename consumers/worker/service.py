"""The worker's composition and run loop: ``run_worker(settings)`` is ``scaleout worker``.

Threads and their connections (pika: one connection per thread):

============  ====================================  ===============================
thread        connection                            job
============  ====================================  ===============================
tasks         Consumer on ``scaleout.worker.<id>``  accept assignments (prefetch MaxTaskCount)
control       Consumer on ``scaleout.control.<id>`` cancels, project archives
reporter      Publisher (user_id = worker id)       started, logs, finished, fetches
heartbeat     Publisher (user_id = worker id)       agent heartbeats
leases        none                                  stop a package whose lease ran out
retention     none                                  old task folders, reports, projects
task-<id>     none                                  one per running package
============  ====================================  ===============================

SIGTERM or SIGINT: stop taking tasks, let running packages finish for
``shutdown_grace_s``, then kill and report the rest, flush the reports, exit 0.
"""

from __future__ import annotations

import getpass
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from dispatcher import metrics
from dispatcher.broker import Consumer, Publisher, login_user
from dispatcher.broker.topology import (
    FETCH_ROUTING_KEY,
    STATUS_EXCHANGE,
    control_queue,
    worker_queue,
)
from dispatcher.errors import BrokerError, ScaleoutError
from schemas.messages import AgentHeartbeat, ProjectFetch, TaskOutcome

from .control import ControlHandler
from .heartbeat import Heartbeat
from .leases import Leases, LeaseWatch, LostLease
from .orphans import stop_orphans
from .outbox import Outbox, Outgoing, Reporter
from .projects import ProjectStore
from .resources import LoadMonitor
from .retention import MIB, Bound, Policy, Retention
from .settings import WorkerSettings
from .stops import StopCause
from .tasks import Registry, TaskHandler

logger = logging.getLogger(__name__)

_REPORT_DRAIN_S = 30.0
"""How long shutdown waits for the final reports to be confirmed or cached."""


class WorkerService:
    """One worker: its handlers, its threads, its shutdown."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.machine_name = socket.gethostname()
        self.login = login_user(settings.broker) or settings.worker_id
        """The AMQP user_id of every publish: RabbitMQ refuses any but the login's."""
        self.stopping = threading.Event()
        """Set on shutdown: no new task is taken, a waiting one goes back to the queue."""
        self.hurry = threading.Event()
        """Set by a second signal: running packages are killed without waiting the grace."""
        self.load = LoadMonitor(
            max_cpu=settings.task_request_max_cpu,
            min_memory_mb=settings.task_request_min_memory_mb,
            min_disk_mb=settings.task_request_min_disk_mb,
            disk_path=settings.tasks_root_folder,
            also_refuse=lambda: self.reporter.refusal(),  # noqa: PLW0108  # made next
        )
        self.outbox = Outbox(
            settings.execution_log_cache_folder,
            settings.execution_log_max_cached,
            max_bytes=int(settings.execution_log_cache_max_size_mb * MIB),
            retention_s=settings.execution_log_cache_retention_s,
        )
        self.reporter = Reporter(lambda: self._publisher("reports"), self.outbox)
        self.projects = ProjectStore(
            settings.project_cache_folder,
            self._request_project,
            timeout_s=settings.project_fetch_timeout_s,
            stopping=self.stopping,
        )
        # One TaskHeartbeatInterval of margin: a beat that is late, not lost, still counts.
        self.leases = Leases(settings.lease_interval_s, settings.task_heartbeat_interval_s)
        self.lease_watch = LeaseWatch(self.leases, self._lease_lost)
        self.heartbeat = Heartbeat(
            lambda: self._publisher("heartbeat"),
            self._snapshot,
            agent_interval_s=settings.agent_heartbeat_interval_s,
            task_interval_s=settings.task_heartbeat_interval_s,
            error_tolerance_s=settings.heartbeat_error_tolerance_s,
            on_tolerance_exceeded=lambda: self.stop_all(
                TaskOutcome.FAILED,
                "heartbeat error tolerance exceeded",
                cause=StopCause.HEARTBEAT_TOLERANCE,
            ),
            busy=lambda: self.registry.busy(),  # noqa: PLW0108  # the registry comes next
            on_confirmed=self.leases.beat_confirmed,
        )
        self.registry = Registry(settings.max_task_count, on_change=self.heartbeat.nudge)
        self.tasks = TaskHandler(
            settings,
            registry=self.registry,
            leases=self.leases,
            reporter=self.reporter,
            projects=self.projects,
            load=self.load,
            stopping=self.stopping,
            machine_name=self.machine_name,
            master_user=settings.master_user(self.login),
        )
        self.control = ControlHandler(
            self.registry, self.projects, settings.master_user(self.login)
        )
        self.retention = Retention(
            _retention_policy(settings),
            tasks_root=settings.tasks_root_folder,
            held_attempts=self.registry.held_keys,
            held_projects=self.registry.running_project_hashes,
            projects=self.projects,
            outbox=self.outbox,
        )
        self._failed = threading.Event()

    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set (or a consumer fails for good); 0 on a clean stop."""
        s = self.settings
        # Before any task: what a previous run left (its packages' children) must not run
        # on next to the retries the master has given other workers meanwhile.
        stop_orphans(s.package_owner, s.kill_grace_s)
        name = f"scaleout-worker-{s.worker_id}"
        reporter_stop, heartbeat_stop = threading.Event(), threading.Event()
        control_stop, tasks_stop = threading.Event(), threading.Event()
        retention_stop = threading.Event()
        control = Consumer(
            s.broker, control_queue(s.worker_id), self.control, name=f"{name}-control", prefetch=10
        )
        # The master never assigns more than MaxTaskCount + TaskBacklog to a worker, so a
        # window of that size takes them all at once and their started reports share one
        # round trip; the backlog's assignments wait for a slot in the handler.
        window = max(1, s.max_task_count + s.task_backlog)
        tasks = Consumer(
            s.broker,
            worker_queue(s.worker_id),
            self.tasks,
            name=f"{name}-tasks",
            prefetch=window,
            batch_max=window,
        )
        threads = {
            "reporter": self._thread("reporter", lambda: self.reporter.run(reporter_stop), stop),
            "heartbeat": self._thread(
                "heartbeat", lambda: self.heartbeat.run(heartbeat_stop), stop
            ),
            # Leases run out while packages drain too; the watch ends with the heartbeat.
            "leases": self._thread("leases", lambda: self.lease_watch.run(heartbeat_stop), stop),
            "retention": self._thread(
                "retention", lambda: self.retention.run(retention_stop), stop
            ),
            "control": self._thread(
                "control", lambda: _consume(control, control_stop, s.worker_id), stop
            ),
            "tasks": self._thread("tasks", lambda: _consume(tasks, tasks_stop, s.worker_id), stop),
        }
        if self.login != s.worker_id:
            logger.warning(
                "worker.shared_login: the broker login %s is not this worker's id %s; the "
                "master accepts its reports only with sender_identity = shared_user (its "
                "default, auto, on plain amqp://)",
                self.login,
                s.worker_id,
            )
        logger.info(
            "worker.started: %s on %s, broker %s",
            s.worker_id,
            self.machine_name,
            s.broker.redacted_url,
            extra={"worker_id": s.worker_id},
        )
        stop.wait()
        logger.info("worker.stopping: no new tasks; %d running", len(self.registry.runs()))
        self.stopping.set()
        tasks_stop.set()
        threads["tasks"].join()
        self._drain_running()
        control_stop.set()
        heartbeat_stop.set()
        retention_stop.set()
        reporter_stop.set()
        for thread_name in ("control", "heartbeat", "retention", "reporter"):
            threads[thread_name].join(timeout=_REPORT_DRAIN_S)
        logger.info("worker.stopped: %s", s.worker_id)
        return 1 if self._failed.is_set() else 0

    def stop_all(self, outcome: TaskOutcome, reason: str, *, cause: StopCause) -> None:
        """Kill every running package's process tree; each is reported with ``outcome``."""
        for run in self.registry.runs():
            run.stop(outcome, reason, cause=cause)

    def _lease_lost(self, lost: LostLease) -> None:
        """Stop a package whose lease may have ended at the master: it may be running on
        another worker by now. Reported ``failed``, so a master that kept the lease (it was
        deaf too) retries the task as usual; one that expired it finds the report stale."""
        run = self.registry.run_of(lost.key)
        if run is None:
            return  # it ended meanwhile
        now, wall = time.monotonic(), time.time()
        silent_s = now - lost.last_renewal
        error = (
            f"lease lost: no renewal confirmed by the broker for {silent_s:.1f} s "
            f"(LeaseInterval {self.settings.lease_interval_s:g} s); the master may have "
            "given the task to another worker"
        )
        if not run.stop(TaskOutcome.FAILED, error, cause=StopCause.LEASE_LOST):
            return
        logger.warning(
            "task.lease_lost: %s/%d: the lease ran out %.1f s ago with no confirmed renewal; "
            "package stopped",
            *lost.key,
            now - lost.deadline,
            extra={
                "task_id": str(lost.key[0]),
                "attempt": lost.key[1],
                "deadline": _wall_iso(lost.deadline, now, wall),
                "last_renewal": _wall_iso(lost.last_renewal, now, wall),
                "margin_s": self.leases.margin_s,
            },
        )

    def _drain_running(self) -> None:
        grace = self.settings.shutdown_grace_s
        deadline = time.monotonic() + grace
        while not self.registry.wait_idle(0.2):
            if self.hurry.is_set() or time.monotonic() >= deadline:
                break
        else:
            return
        self.stop_all(
            TaskOutcome.FAILED,
            f"worker shut down before the package ended (shutdown grace {grace:g} s)",
            cause=StopCause.SHUTDOWN,
        )
        if not self.registry.wait_idle(self.settings.kill_grace_s + _REPORT_DRAIN_S):
            logger.error("worker.stop_timeout: packages did not end after being killed")

    def _thread(
        self, name: str, target: Callable[[], None], stop_on_error: threading.Event
    ) -> threading.Thread:
        """A daemon thread whose failure stops the worker (exit 1) rather than leave it
        half-alive: a worker without its reporter or heartbeat must not hold tasks."""

        def guarded() -> None:
            try:
                target()
            except ScaleoutError as exc:
                logger.critical("worker.thread_failed: %s: %s %s", name, exc, exc.hint)
                self._failed.set()
                stop_on_error.set()
            except Exception:
                logger.exception("worker.thread_failed: %s", name)
                self._failed.set()
                stop_on_error.set()

        thread = threading.Thread(target=guarded, name=f"worker-{name}", daemon=True)
        thread.start()
        return thread

    def _publisher(self, purpose: str) -> Publisher:
        s = self.settings
        name = f"scaleout-worker-{s.worker_id}-{purpose}"
        return Publisher(s.broker, name=name, user_id=self.login)

    def _request_project(self, project_hash: str) -> None:
        fetch = ProjectFetch(worker_id=self.settings.worker_id, project_hash=project_hash)
        future = self.reporter.submit(
            Outgoing(STATUS_EXCHANGE, FETCH_ROUTING_KEY, fetch), durable=False
        )
        future.result(timeout=self.settings.broker.confirm_timeout_s * 3)

    def _snapshot(self) -> AgentHeartbeat:
        s = self.settings
        load = self.load.sample()
        refusal = "shutting down" if self.stopping.is_set() else self.load.refusal(load)
        return AgentHeartbeat(
            worker_id=s.worker_id,
            machine_name=self.machine_name,
            user_account=_user(),
            display_name=s.display_name,
            running=self.registry.running_attempts(),
            max_task_count=s.max_task_count,
            task_backlog=s.task_backlog,
            cpu_percent=load.cpu_percent,
            free_memory_mb=load.free_memory_mb,
            free_disk_mb=load.free_disk_mb or 0.0,
            accepting=not refusal,
            not_accepting=refusal[:256],
            lease_interval_s=s.lease_interval_s,
        )


def _retention_policy(s: WorkerSettings) -> Policy:
    return Policy(
        tasks=Bound(s.tasks_root_folder_retention_s, int(s.tasks_root_folder_max_size_mb * MIB)),
        projects=Bound(s.project_cache_retention_s, int(s.project_cache_max_size_mb * MIB)),
        interval_s=s.retention_sweep_interval_s,
    )


def _wall_iso(monotonic: float, now: float, wall: float) -> str:
    """A monotonic instant as the wall-clock time it was (for operators' logs only)."""
    return datetime.fromtimestamp(wall - (now - monotonic), UTC).isoformat(timespec="milliseconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def run_worker(settings: WorkerSettings) -> int:
    """Run the worker until SIGTERM or SIGINT; the process exit code. A second signal
    skips the shutdown grace: running packages are killed and reported at once."""
    stop = threading.Event()
    service = WorkerService(settings)
    served = metrics.with_labels(metrics.WORKER, worker=settings.worker_id)
    metrics.serve(settings.metrics_port, settings.metrics_host, served)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("worker.signal: %s", signal.Signals(signum).name)
        if stop.is_set():
            service.hurry.set()
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        return service.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_QUEUE_MISSING_RETRY_S = 5.0


def _consume(consumer: Consumer, stop: threading.Event, worker_id: str) -> None:
    """Run ``consumer`` until ``stop``; while its queue does not exist yet, wait for it.

    A new worker's queues are declared by the master when it first hears the worker's
    heartbeat (or by `scaleout workers add`); the worker itself may not declare them."""
    while not stop.is_set():
        try:
            consumer.run(stop)
        except BrokerError as exc:
            if exc.code != 404:
                raise
            logger.warning(
                "worker.queue_missing: %s; retrying in %.0f s",
                exc,
                _QUEUE_MISSING_RETRY_S,
                extra={
                    "worker_id": worker_id,
                    "hint": f"the master declares it on this worker's first heartbeat, "
                    f"or run `scaleout workers add {worker_id}`",
                },
            )
            stop.wait(_QUEUE_MISSING_RETRY_S)
        else:
            return
