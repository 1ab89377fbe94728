"""The consuming half of the broker adapter: :class:`Consumer` and the verdict types.

pika's BlockingConnection is not thread-safe and services heartbeats only inside its own
calls, so a slow handler must never run in its callbacks (pika issues #564, #930). Here
the connection's thread only moves deliveries into a local queue and settles verdicts;
a handler thread runs the handler and sends each batch's verdicts back through
``add_callback_threadsafe``, the one thread-safe BlockingConnection method.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue as queue_lib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from dispatcher import metrics
from dispatcher.broker.connection import (
    CONNECTION_ERRORS,
    address,
    close_quietly,
    is_permanent,
    open_connection,
    reply_code,
    translate,
    with_retries,
)
from dispatcher.errors import BrokerError
from dispatcher.settings import BrokerSettings

logger = logging.getLogger("dispatcher.broker")

_POLL_S: Final = 0.2
"""How often each loop looks at the stop event; also bounds a batch's extra latency."""
_HOLD_FIRST_S: Final = 0.2
_HOLD_MAX_S: Final = 5.0
"""Backoff of a held batch (see ``hold_on``): from a blink to a restart of the database."""
_KEEPALIVE_S: Final = 5.0
"""How often the handler thread calls ``keepalive``: far below any AMQP heartbeat
timeout, so a reply connection the handler rarely uses stays up."""
_DRAIN_TIMEOUT_S: Final = 30.0
"""On stop, how long the current batch may take before the connection closes anyway
(its unsettled deliveries are then redelivered by the broker)."""


class _Abandoned(Exception):
    """A held batch that is no longer worth retrying: stopping, or its channel is gone."""


@dataclass(frozen=True, slots=True)
class Delivery:
    body: bytes
    exchange: str
    routing_key: str
    user_id: str | None
    """AMQP user_id property; RabbitMQ guarantees it equals the sender's login."""
    message_id: str | None
    redelivered: bool
    delivery_tag: int
    headers: Mapping[str, object]
    received_at: float | None = None
    """``time.monotonic()`` when the connection's thread took it; None if not known. A
    handler that holds a delivery a while judges its age by this, not by when it got it."""


class Disposition(StrEnum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"
    REQUEUE = "requeue"


@dataclass(frozen=True, slots=True)
class Verdict:
    disposition: Disposition
    reason: str = ""
    """For DEAD_LETTER: logged (event ``broker.dead_letter``) with the queue."""


ACK: Final = Verdict(Disposition.ACK)
_REQUEUE: Final = Verdict(Disposition.REQUEUE)

Handler = Callable[[Sequence[Delivery]], Sequence[Verdict]]


@dataclass(frozen=True, slots=True)
class _Batch:
    generation: int
    deliveries: tuple[Delivery, ...]


class Consumer:
    """Consumes one queue on its own connection. The handler NEVER runs in pika's I/O
    callback: deliveries go to a handler thread; verdicts come back to the connection's
    thread through add_callback_threadsafe. Reconnects with backoff and re-declares."""

    def __init__(
        self,
        settings: BrokerSettings,
        queue: str,
        handler: Handler,
        *,
        name: str,
        prefetch: int = 100,
        batch_max: int = 1,
        declare: Callable[[BlockingChannel], None] | None = None,
        keepalive: Callable[[], None] | None = None,
        hold_on: tuple[type[Exception], ...] = (),
    ) -> None:
        if batch_max < 1 or prefetch < 1:
            msg = "prefetch and batch_max must be at least 1"
            raise ValueError(msg)
        self._settings = settings
        self._queue = queue
        self._handler = handler
        self._name = name
        self._prefetch = prefetch
        self._batch_max = batch_max
        self._declare = declare
        self._keepalive = keepalive
        self._hold_on = hold_on
        """Handler errors that mean "not now" (the catalog is down): the batch is held and
        retried with backoff instead of requeued. A requeue at once would spin through the
        queue's delivery limit in a second and dead-letter reports that are merely early."""
        self._stop: threading.Event | None = None
        self._inbox: queue_lib.SimpleQueue[tuple[int, Delivery]] = queue_lib.SimpleQueue()
        self._generation = 0
        self._connected = threading.Event()
        self._connected_since: float | None = None
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._settled_tag = 0
        """The last delivery tag settled on the current channel (its thread only)."""

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connected_since(self) -> float | None:
        """``time.monotonic()`` when the current connection began consuming; None while
        down. Lets a caller tell "deaf for a while" from "listening all along"."""
        return self._connected_since

    # --- the connection's thread ----------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set, reconnecting after any transient failure; raise
        (translated) only on a fatal one, e.g. AccessRefused on the queue."""
        # The handler thread gets its own event: a fatal error must end this consumer
        # without setting the caller's event, which may stop other parts too.
        finished = threading.Event()
        self._stop = stop
        handler_thread = threading.Thread(
            target=self._handle_loop,
            args=(stop, finished),
            name=f"{self._name}-handler",
            daemon=True,
        )
        handler_thread.start()
        try:
            while not stop.is_set():
                self._session(stop)
        finally:
            finished.set()
            self._drain_and_close(handler_thread)

    def _session(self, stop: threading.Event) -> None:
        """One connection's life: connect (with retries), consume until stop or loss."""
        reconnect = self._generation > 0  # each connection so far raised it
        try:
            connection = with_retries(
                f"consume {self._queue} at {address(self._settings)}", self._connect, stop
            )
        except BrokerError:
            if stop.is_set():
                return  # asked to stop while the broker was unreachable
            raise
        if reconnect:
            metrics.BROKER_RECONNECTS.labels(connection="consumer").inc()
        try:
            while not stop.is_set():
                connection.process_data_events(time_limit=_POLL_S)
        except CONNECTION_ERRORS as exc:
            self._lost()
            # 406 while consuming is an unknown delivery tag or a consumer timeout: a new
            # channel cures both. At connect time (queue arguments clash) it is fatal.
            if is_permanent(exc) and reply_code(exc) != 406:
                raise translate(exc, f"consume {self._queue} at {address(self._settings)}") from exc
            logger.warning(
                "consumer.connection_lost: %s: %s: %s",
                self._queue,
                type(exc).__name__,
                exc,
                extra={"queue": self._queue, "consumer": self._name},
            )

    def _connect(self) -> BlockingConnection:
        connection = open_connection(self._settings, name=self._name)
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self._prefetch)
            if self._declare is not None:
                self._declare(channel)
            self._generation += 1
            on_message = functools.partial(self._on_message, self._generation)
            channel.basic_consume(self._queue, on_message)
        except BaseException:
            close_quietly(connection)
            raise
        self._connection, self._channel = connection, channel
        self._settled_tag = 0  # a new channel numbers its deliveries from 1
        self._connected_since = time.monotonic()
        self._connected.set()
        logger.info(
            "consumer.started: %s (prefetch %d)",
            self._queue,
            self._prefetch,
            extra={"queue": self._queue, "consumer": self._name},
        )
        return connection

    def _lost(self) -> None:
        """Forget the dead connection: its delivery tags mean nothing on the next one."""
        self._connected.clear()
        self._connected_since = None
        self._generation += 1
        if self._connection is not None:
            close_quietly(self._connection)
        self._connection = self._channel = None

    def _on_message(
        self,
        generation: int,
        _channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        delivery = Delivery(
            body=body,
            exchange=method.exchange or "",
            routing_key=method.routing_key or "",
            user_id=properties.user_id,
            message_id=properties.message_id,
            redelivered=bool(method.redelivered),
            delivery_tag=int(method.delivery_tag or 0),
            headers=dict(properties.headers or {}),
            received_at=time.monotonic(),
        )
        self._inbox.put((generation, delivery))

    def _settle(self, batch: _Batch, verdicts: Sequence[Verdict]) -> None:
        """Runs on the connection's thread (scheduled via add_callback_threadsafe)."""
        channel = self._channel
        if batch.generation != self._generation or channel is None or not channel.is_open:
            return  # the channel that delivered these is gone; the broker redelivers them
        tags = [d.delivery_tag for d in batch.deliveries]
        if tags == list(range(self._settled_tag + 1, tags[-1] + 1)):
            # Every tag up to the last is this batch's and every one before it is settled,
            # so one frame can ack them all instead of one frame (and send) per delivery.
            # A gap (a batch dropped while stopping) ends that for this channel.
            self._settled_tag = tags[-1]
            if all(v.disposition is Disposition.ACK for v in verdicts):
                channel.basic_ack(tags[-1], multiple=True)
                return
        for delivery, verdict in zip(batch.deliveries, verdicts, strict=True):
            tag = delivery.delivery_tag
            if verdict.disposition is Disposition.ACK:
                channel.basic_ack(tag)
            elif verdict.disposition is Disposition.REQUEUE:
                channel.basic_nack(tag, requeue=True)
            else:
                channel.basic_nack(tag, requeue=False)
                logger.warning(
                    "broker.dead_letter: %s: %s",
                    self._queue,
                    verdict.reason,
                    extra={
                        "queue": self._queue,
                        "reason": verdict.reason,
                        "message_id": delivery.message_id,
                        "user_id": delivery.user_id,
                    },
                )

    def _drain_and_close(self, handler_thread: threading.Thread) -> None:
        connection = self._connection
        if connection is not None and connection.is_open:
            try:
                # Stop new deliveries, let the batch in hand finish and settle its verdicts.
                if self._channel is not None and self._channel.is_open:
                    self._channel.stop_consuming()
                waited = 0.0
                while handler_thread.is_alive() and waited < _DRAIN_TIMEOUT_S:
                    connection.process_data_events(time_limit=_POLL_S)
                    waited += _POLL_S
                connection.process_data_events(time_limit=0)
            except CONNECTION_ERRORS:
                pass  # closing anyway; unsettled deliveries return to the queue
        self._lost()
        handler_thread.join(timeout=_POLL_S * 5)

    # --- the handler thread ---------------------------------------------------------

    def _handle_loop(self, stop: threading.Event, finished: threading.Event) -> None:
        serviced = time.monotonic()
        while not (stop.is_set() or finished.is_set()):
            batch = self._next_batch()
            if batch is not None:
                self._handle(batch)
            if self._keepalive is not None and time.monotonic() - serviced >= _KEEPALIVE_S:
                # The handler's own connections (a reply publisher) need servicing too, and
                # a busy queue does not mean they are busy: heartbeats rarely need a reply.
                self._service()
                serviced = time.monotonic()

    def _service(self) -> None:
        assert self._keepalive is not None
        try:
            self._keepalive()
        except Exception:
            logger.exception("consumer.keepalive_failed", extra={"queue": self._queue})

    def _verdicts(self, batch: _Batch) -> list[Verdict]:
        delay = _HOLD_FIRST_S
        while True:
            try:
                verdicts = list(self._handler(batch.deliveries))
            except self._hold_on as exc:
                self._held(batch, exc, delay)
                delay = min(delay * 2, _HOLD_MAX_S)
                continue
            if len(verdicts) != len(batch.deliveries):
                msg = f"{len(verdicts)} verdicts for {len(batch.deliveries)} deliveries"
                raise ValueError(msg)
            return verdicts

    def _held(self, batch: _Batch, exc: Exception, delay: float) -> None:
        logger.warning(
            "consumer.batch_held: %s: %s; %d deliveries kept, retrying in %.1f s",
            self._queue,
            exc,
            len(batch.deliveries),
            delay,
            extra={"queue": self._queue, "consumer": self._name},
        )
        metrics.CONSUMER_BATCHES_HELD.labels(queue=self._queue).inc()
        stop = self._stop
        if (stop is not None and stop.wait(delay)) or batch.generation != self._generation:
            raise _Abandoned
        if self._keepalive is not None:
            self._service()  # a long outage must not cost the reply connections too

    def _next_batch(self) -> _Batch | None:
        """Whatever has arrived, up to batch_max, without waiting for a full batch; only
        deliveries of the current connection (older tags cannot be settled)."""
        try:
            generation, first = self._inbox.get(timeout=_POLL_S)
        except queue_lib.Empty:
            return None
        items = [first]
        while len(items) < self._batch_max:
            try:
                gen, delivery = self._inbox.get_nowait()
            except queue_lib.Empty:
                break
            if gen != generation:
                generation, items = gen, []
            items.append(delivery)
        if generation != self._generation:
            return None
        return _Batch(generation, tuple(items))

    def _handle(self, batch: _Batch) -> None:
        try:
            verdicts = self._verdicts(batch)
        except _Abandoned:
            return  # stopping, or the connection that delivered the batch is gone
        except Exception as exc:
            logger.exception(
                "consumer.handler_error: %s: %s; requeueing %d deliveries",
                self._queue,
                type(exc).__name__,
                len(batch.deliveries),
                extra={"queue": self._queue, "consumer": self._name},
            )
            verdicts = [_REQUEUE] * len(batch.deliveries)
        connection = self._connection
        if connection is None:
            return
        # If the connection closed meanwhile, the broker redelivers the batch.
        with contextlib.suppress(*CONNECTION_ERRORS):
            connection.add_callback_threadsafe(functools.partial(self._settle, batch, verdicts))


__all__ = ["ACK", "BrokerError", "Consumer", "Delivery", "Disposition", "Verdict"]
