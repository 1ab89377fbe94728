"""The Scale Out Master service: wires the loops and supervises them.

Loops, each on its own named thread (and, where it talks to RabbitMQ, its own
connection): the dispatcher, the status / heartbeat / fetch / wake consumers, and the
three SSIS timers. If any loop dies unexpectedly the service stops every loop and exits
non-zero, so a supervisor (systemd, Docker) restarts it; transient outages (broker or
catalog down) are ridden out inside the loops. SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from consumers.master.fetch import FetchHandler
from consumers.master.heartbeat import HeartbeatHandler
from consumers.master.identity import SenderCheck
from consumers.master.refusals import Refusals
from consumers.master.replies import RefusalReplies
from consumers.master.status import StatusHandler
from consumers.master.wake import WakeHandler
from dispatcher import metrics, timers
from dispatcher.broker import Consumer, Delivery, Verdict, topology
from dispatcher.catalog import Catalog
from dispatcher.catalog.collector import CatalogCollector
from dispatcher.dispatch import Dispatcher
from dispatcher.errors import BrokerError, CatalogNotInitialised, CatalogUnavailable
from dispatcher.horizon import ReadHorizon
from dispatcher.outbound import Outbound
from dispatcher.settings import MasterSettings, resolve_identity

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 10.0


@dataclass
class _Loop:
    name: str
    target: Callable[[threading.Event], None]
    thread: threading.Thread | None = None
    error: BaseException | None = field(default=None)


class MasterService:
    def __init__(self, settings: MasterSettings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.stop_event = threading.Event()
        self.outbound = Outbound(settings.broker, name="master")
        self.dispatcher = Dispatcher(
            catalog,
            self.outbound,
            batch_size=settings.dispatch_batch_size,
            poll_interval_s=settings.dispatch_poll_interval_ms / 1000,
            republish_after_s=settings.republish_after_s,
        )
        self.heartbeat_clock = metrics.HeartbeatClock()
        self._collector = CatalogCollector(catalog.counts, catalog.list_worker_agents)
        self.refusals = Refusals(catalog)
        self.horizon = ReadHorizon(self.outbound.read_marker, stop=self.stop_event)
        self._loops = self._build_loops()

    # -- composition ---------------------------------------------------------------------

    def _build_loops(self) -> list[_Loop]:
        s = self.settings
        senders = SenderCheck(resolve_identity(s.sender_identity, s.broker))
        wake, refusals, seen = self.dispatcher.wake.set, self.refusals, self.horizon.seen
        status = StatusHandler(
            self.catalog,
            senders=senders,
            on_capacity=wake,
            refusals=refusals,
            replies=RefusalReplies(self.outbound),
            markers_seen=seen,
        )
        heartbeat = HeartbeatHandler(
            self.catalog,
            self.outbound,
            senders=senders,
            on_capacity=wake,
            refusals=refusals,
            markers_seen=seen,
        )
        fetch = FetchHandler(self.catalog, self.outbound, senders=senders, refusals=refusals)
        properties = timers.master_properties(s.master_heartbeat_interval_ms)
        heartbeat_loop, heartbeat_consumer = self._consumer_loop(
            topology.HEARTBEAT_QUEUE, heartbeat, prefetch=100, batch_max=50
        )
        watch = timers.HeartbeatWatch(lambda: heartbeat_consumer.connected_since, s.expiry_grace_s)
        return [
            _Loop("dispatch", self.dispatcher.run),
            self._consumer_loop(
                topology.STATUS_QUEUE,
                status,
                prefetch=2 * s.status_batch_max,
                batch_max=s.status_batch_max,
            )[0],
            heartbeat_loop,
            self._consumer_loop(topology.FETCH_QUEUE, fetch, prefetch=4, batch_max=1)[0],
            self._consumer_loop(topology.WAKE_QUEUE, WakeHandler(wake), prefetch=10, batch_max=10)[
                0
            ],
            _Loop(
                "timer-master-heartbeat",
                timers.Timer(
                    "master_heartbeat",
                    s.master_heartbeat_interval_ms / 1000,
                    lambda: self._master_heartbeat(properties),
                ).run,
            ),
            _Loop(
                "timer-expired-tasks",
                timers.Timer(
                    "deal_with_expired_tasks",
                    s.deal_with_expired_tasks_interval_ms / 1000,
                    lambda: timers.deal_with_expired_tasks(self.catalog, wake, watch, self.horizon),
                    keepalive=self.outbound.keepalive,
                ).run,
            ),
            _Loop(
                "timer-cleanup",
                timers.Timer(
                    "cleanup_completed_jobs",
                    s.cleanup_completed_jobs_interval_ms / 1000,
                    lambda: timers.cleanup_completed_jobs(
                        self.catalog, s.completed_jobs_retention_min
                    ),
                ).run,
            ),
        ]

    def _master_heartbeat(self, properties: dict[str, str]) -> None:
        """The timer's tick; it also writes refusals a last batch left in memory."""
        timers.master_heartbeat(self.catalog, properties, self.heartbeat_clock)
        self.refusals.flush()

    def _consumer_loop(
        self,
        queue: str,
        handler: Callable[[Sequence[Delivery]], Sequence[Verdict]],
        *,
        prefetch: int,
        batch_max: int,
    ) -> tuple[_Loop, Consumer]:
        consumer = Consumer(
            self.settings.broker,
            queue,
            handler,
            name=f"master:{queue}",
            prefetch=prefetch,
            batch_max=batch_max,
            declare=topology.declare_master_topology,
            keepalive=self.outbound.keepalive,
            hold_on=(CatalogUnavailable,),
        )
        return _Loop(f"consume-{queue.rsplit('.', 1)[-1]}", consumer.run), consumer

    def _declare_enabled_workers(self) -> None:
        """Declare enabled workers' queues so the first dispatch is routable. A broker that
        is down is not fatal: the loops ride the outage out, as a worker does, and each
        worker's first heartbeat after it declares its queues again."""
        for worker in self.catalog.list_worker_agents():
            if not worker.is_enabled:
                continue
            try:
                self.outbound.ensure_worker(worker.worker_agent_id)
            except BrokerError as exc:
                logger.warning(
                    "service.queues_deferred: %s",
                    exc,
                    extra={
                        "hint": exc.hint or "the queues are declared at each worker's heartbeat"
                    },
                )
                return  # the next worker would wait out the same outage again

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Check the catalog, announce this master, start every loop; returns at once."""
        if self.catalog.schema_revision() is None:
            msg = "the catalog has no scaleout schema"
            raise CatalogNotInitialised(msg, hint="run `scaleout catalog init` first")
        props = timers.master_properties(self.settings.master_heartbeat_interval_ms)
        timers.master_heartbeat(self.catalog, props, self.heartbeat_clock)
        self._declare_enabled_workers()
        metrics.MASTER.register(self._collector)
        metrics.serve(self.settings.metrics_port, self.settings.metrics_host, metrics.MASTER)
        for loop in self._loops:
            loop.thread = threading.Thread(
                target=self._guard, args=(loop,), name=loop.name, daemon=True
            )
            loop.thread.start()
        self.dispatcher.wake.set()
        logger.info(
            "service.started",
            extra={
                "catalog": self.settings.catalog.redacted_url,
                "broker": self.settings.broker.redacted_url,
                "loops": [loop.name for loop in self._loops],
            },
        )

    def _guard(self, loop: _Loop) -> None:
        try:
            loop.target(self.stop_event)
        except BaseException as exc:  # every death is reported, then stops the service
            loop.error = exc
            logger.exception("service.loop_died", extra={"loop": loop.name})
        finally:
            if not self.stop_event.is_set() and loop.error is None:
                loop.error = RuntimeError(f"loop {loop.name} returned unexpectedly")
                logger.error("service.loop_returned", extra={"loop": loop.name})
            self.stop_event.set()

    def wait(self) -> int:
        """Block until stopped; 0 for a requested stop, 1 when a loop died."""
        self.stop_event.wait()
        return self.shutdown()

    def shutdown(self) -> int:
        self.stop_event.set()
        self.dispatcher.wake.set()
        for loop in self._loops:
            if loop.thread is not None:
                loop.thread.join(_JOIN_TIMEOUT_S)
        self.refusals.flush(force=True)
        self.outbound.close()
        with contextlib.suppress(KeyError):
            metrics.MASTER.unregister(self._collector)
        failed = [loop.name for loop in self._loops if loop.error is not None]
        logger.info("service.stopped", extra={"failed_loops": failed})
        return 1 if failed else 0

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT or a loop's death, stop; the exit code."""
        self._install_signals()
        self.start()
        return self.wait()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def _stop(signum: int, _frame: FrameType | None) -> None:
            logger.info("service.stopping", extra={"signal": signal.Signals(signum).name})
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
