"""The Scale Out Master service: wires the loops and supervises them.

Every master runs two loops of its own: the leadership loop (dispatcher/leadership.py),
which takes or renews the catalog's leader lease, and its presence heartbeat (its row in
``masters``). The master holding the lease runs a *term* of work loops, each on its own
named thread (and, where it talks to RabbitMQ, its own connection): the dispatcher, the
status / heartbeat / fetch / wake consumers, and the three SSIS timers. A term ends when
the lease is lost (another master took over) or at a stop. If any loop dies unexpectedly
the service stops everything and exits non-zero, so a supervisor (systemd, Docker)
restarts it; transient outages (broker or catalog down) are ridden out inside the loops.
SIGTERM and SIGINT stop it cleanly and release the lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
from dispatcher.catalog.records import MasterInstance, MasterRole
from dispatcher.dispatch import Dispatcher
from dispatcher.errors import BrokerError, CatalogError, CatalogNotInitialised, CatalogUnavailable
from dispatcher.horizon import ReadHorizon
from dispatcher.leadership import Leadership
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


@dataclass
class _Term:
    """One leadership term's work: its loops and what they share, stopped together."""

    epoch: int
    outbound: Outbound
    stop: threading.Event
    loops: list[_Loop]


class MasterService:
    def __init__(self, settings: MasterSettings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.stop_event = threading.Event()
        self.heartbeat_clock = metrics.HeartbeatClock()
        self._collector = CatalogCollector(catalog.counts, catalog.list_worker_agents)
        self.refusals = Refusals(catalog)
        self._properties = timers.master_properties(settings.master_heartbeat_interval_ms)
        self._metrics_port: int | None = None
        self._term: _Term | None = None
        self._term_lock = threading.Lock()
        self.leadership: Leadership | None = None
        self._own: list[_Loop] = []
        self._failed: list[str] = []

    @property
    def master_id(self) -> str:
        assert self.leadership is not None, "start() names the master"
        return self.leadership.master_id

    # -- a term's loops ------------------------------------------------------------------

    def _begin_term(self, epoch: int) -> None:
        outbound = Outbound(self.settings.broker, name="master")
        term = _Term(epoch, outbound, threading.Event(), [])
        term.loops = self._build_loops(term)
        self._declare_enabled_workers(outbound)
        with self._term_lock:
            self._term = term
        for loop in term.loops:
            self._start(loop, term.stop)
        self._present()  # say "leader" now, not at the next heartbeat

    def _end_term(self) -> None:
        with self._term_lock:
            term, self._term = self._term, None
        if term is None:
            return
        term.stop.set()
        for loop in term.loops:
            if loop.thread is not None:
                loop.thread.join(_JOIN_TIMEOUT_S)
        term.outbound.close()
        logger.info("service.term_ended", extra={"epoch": term.epoch})

    def _build_loops(self, term: _Term) -> list[_Loop]:
        s, outbound = self.settings, term.outbound
        dispatcher = Dispatcher(
            self.catalog,
            outbound,
            batch_size=s.dispatch_batch_size,
            poll_interval_s=s.dispatch_poll_interval_ms / 1000,
            republish_after_s=s.republish_after_s,
        )
        horizon = ReadHorizon(outbound.read_marker, stop=term.stop)
        senders = SenderCheck(resolve_identity(s.sender_identity, s.broker))
        wake, refusals, seen = dispatcher.wake.set, self.refusals, horizon.seen
        status = StatusHandler(
            self.catalog,
            senders=senders,
            on_capacity=wake,
            refusals=refusals,
            replies=RefusalReplies(outbound),
            markers_seen=seen,
        )
        heartbeat = HeartbeatHandler(
            self.catalog,
            outbound,
            senders=senders,
            on_capacity=wake,
            refusals=refusals,
            markers_seen=seen,
        )
        fetch = FetchHandler(self.catalog, outbound, senders=senders, refusals=refusals)
        heartbeat_loop, heartbeat_consumer = self._consumer_loop(
            outbound, topology.HEARTBEAT_QUEUE, heartbeat, prefetch=100, batch_max=50
        )
        # A new term's consumers connect afresh, so the watch waits one grace again:
        # a standby that takes over judges no lease before it has heard the workers.
        watch = timers.HeartbeatWatch(lambda: heartbeat_consumer.connected_since, s.expiry_grace_s)
        status_loop = self._consumer_loop(
            outbound,
            topology.STATUS_QUEUE,
            status,
            prefetch=2 * s.status_batch_max,
            batch_max=s.status_batch_max,
        )[0]
        fetch_loop = self._consumer_loop(
            outbound, topology.FETCH_QUEUE, fetch, prefetch=4, batch_max=1
        )[0]
        wake_loop = self._consumer_loop(
            outbound, topology.WAKE_QUEUE, WakeHandler(wake), prefetch=10, batch_max=10
        )[0]
        dispatcher.wake.set()
        return [
            _Loop("dispatch", dispatcher.run),
            status_loop,
            heartbeat_loop,
            fetch_loop,
            wake_loop,
            _Loop(
                "timer-expired-tasks",
                timers.Timer(
                    "deal_with_expired_tasks",
                    s.deal_with_expired_tasks_interval_ms / 1000,
                    lambda: timers.deal_with_expired_tasks(self.catalog, wake, watch, horizon),
                    keepalive=outbound.keepalive,
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

    def _consumer_loop(
        self,
        outbound: Outbound,
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
            keepalive=outbound.keepalive,
            hold_on=(CatalogUnavailable,),
        )
        return _Loop(f"consume-{queue.rsplit('.', 1)[-1]}", consumer.run), consumer

    def _declare_enabled_workers(self, outbound: Outbound) -> None:
        """Declare enabled workers' queues so the first dispatch is routable. A broker that
        is down is not fatal: the loops ride the outage out, as a worker does, and each
        worker's first heartbeat after it declares its queues again."""
        try:
            workers = self.catalog.list_worker_agents()
        except CatalogUnavailable:
            return  # the heartbeats declare them
        for worker in workers:
            if not worker.is_enabled:
                continue
            try:
                outbound.ensure_worker(worker.worker_agent_id)
            except BrokerError as exc:
                logger.warning(
                    "service.queues_deferred: %s",
                    exc,
                    extra={
                        "hint": exc.hint or "the queues are declared at each worker's heartbeat"
                    },
                )
                return  # the next worker would wait out the same outage again

    # -- every master's own loops ----------------------------------------------------------

    def _present(self) -> None:
        """This master's heartbeat: its row in ``masters`` (every master), and, for the
        leader, SSIS's master_properties and the refusals a last batch left in memory."""
        leadership = self.leadership
        assert leadership is not None
        epoch = leadership.epoch
        role = MasterRole.LEADER if epoch is not None else MasterRole.STANDBY
        self.catalog.announce_master(self._instance(role, epoch))
        self.heartbeat_clock.beat()  # a standby's heartbeat is its row in masters
        if epoch is not None:
            timers.master_heartbeat(self.catalog, self._properties, self.heartbeat_clock)
            self.refusals.flush()

    def _instance(self, role: MasterRole, epoch: int | None) -> MasterInstance:
        return MasterInstance(
            master_id=self.master_id,
            machine_name=self._properties["MACHINE_NAME"],
            machine_ip=self._properties["MACHINE_IP"],
            metrics_port=self._metrics_port,
            role=role,
            epoch=epoch,
        )

    def _own_loops(self, leadership: Leadership) -> list[_Loop]:
        return [
            _Loop("leadership", leadership.run),
            _Loop(
                "timer-master-heartbeat",
                timers.Timer(
                    "master_heartbeat",
                    self.settings.master_heartbeat_interval_ms / 1000,
                    self._present,
                ).run,
            ),
        ]

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Check the catalog, announce this master, start its loops; returns at once. The
        work loops start when this master holds the leader lease (at once, when no other
        master does)."""
        if self.catalog.schema_revision() is None:
            msg = "the catalog has no scaleout schema"
            raise CatalogNotInitialised(msg, hint="run `scaleout catalog init` first")
        metrics.MASTER.register(self._collector)
        s = self.settings
        self._metrics_port = metrics.serve_first_free(
            s.metrics_port, s.metrics_host, metrics.MASTER
        )
        leadership = Leadership(
            self.catalog,
            self._master_id(),
            s.leader_lease_s,
            on_elected=self._begin_term,
            on_deposed=self._end_term,
        )
        self.leadership = leadership
        self.catalog.announce_master(self._instance(MasterRole.STANDBY, None))
        self.catalog.master_restarted(leadership.master_id)
        leadership.step()  # lead at once when the lease is free: no wait for a first tick
        self._own = self._own_loops(leadership)
        for loop in self._own:
            self._start(loop, self.stop_event)
        logger.info(
            "service.started",
            extra={
                "master_id": leadership.master_id,
                "role": "leader" if leadership.is_leader else "standby",
                "catalog": s.catalog.redacted_url,
                "broker": s.broker.redacted_url,
                "metrics_port": self._metrics_port,
            },
        )

    def _master_id(self) -> str:
        if self.settings.master_id != "auto":
            return self.settings.master_id
        host = self._properties["MACHINE_NAME"]
        suffix = self._metrics_port if self._metrics_port else os.getpid()
        return f"{host}:{suffix}"[:128]

    def _start(self, loop: _Loop, stop: threading.Event) -> None:
        loop.thread = threading.Thread(
            target=self._guard, args=(loop, stop), name=loop.name, daemon=True
        )
        loop.thread.start()

    def _guard(self, loop: _Loop, stop: threading.Event) -> None:
        try:
            loop.target(stop)
        except BaseException as exc:  # every death is reported, then stops the service
            loop.error = exc
            logger.exception("service.loop_died", extra={"loop": loop.name})
        finally:
            if not stop.is_set() and loop.error is None:
                loop.error = RuntimeError(f"loop {loop.name} returned unexpectedly")
                logger.error("service.loop_returned", extra={"loop": loop.name})
            if loop.error is not None:
                self._failed.append(loop.name)
                self.stop_event.set()

    def wait(self) -> int:
        """Block until stopped; 0 for a requested stop, 1 when a loop died."""
        self.stop_event.wait()
        return self.shutdown()

    def shutdown(self) -> int:
        self.stop_event.set()
        if self.leadership is not None:
            self.leadership.nudge.set()
        for loop in self._own:
            if loop.thread is not None:
                loop.thread.join(_JOIN_TIMEOUT_S)
        if self.leadership is not None:
            self.leadership.release()  # ends the term, so a standby need not wait
            self._last_word()
        self._end_term()
        self.refusals.flush(force=True)
        with contextlib.suppress(KeyError):
            metrics.MASTER.unregister(self._collector)
        logger.info("service.stopped", extra={"failed_loops": self._failed})
        return 1 if self._failed else 0

    def _last_word(self) -> None:
        with contextlib.suppress(CatalogError):
            self.catalog.announce_master(self._instance(MasterRole.STOPPED, None))

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
