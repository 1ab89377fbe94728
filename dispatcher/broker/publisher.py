"""The publishing half of the broker adapter: :class:`Publisher`.

Every publish is mandatory and waits for the broker's confirm, so "published" means the
broker has the message (on disk, for a persistent one). Confirms are tracked on the
channel's asynchronous core: BlockingChannel's own confirm mode waits for each message in
turn and has no timeout, while a batch here is sent whole and then awaited as one window.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

import pydantic
from pika import BasicProperties, DeliveryMode
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.channel import Channel
from pika.frame import Method
from pika.spec import Basic, Confirm

from dispatcher import metrics
from dispatcher.broker.connection import (
    CONNECTION_ERRORS,
    address,
    close_quietly,
    describe,
    is_permanent,
    open_connection,
    reply_code,
    translate,
    with_retries,
)
from dispatcher.errors import AccessRefused, BrokerError, PublishFailed
from dispatcher.settings import BrokerSettings

logger = logging.getLogger("dispatcher.broker")

_CONFIRM_SELECT_TIMEOUT_S: Final = 10.0


@dataclass(slots=True)
class _Window:
    """Publishes awaiting their confirm, by channel sequence number."""

    by_seq: dict[int, int] = field(default_factory=dict)  # seq -> item index
    returned: dict[str, str] = field(default_factory=dict)  # message_id -> reply text
    message_ids: dict[int, str] = field(default_factory=dict)  # item index -> message_id
    results: dict[int, BrokerError | None] = field(default_factory=dict)  # index -> outcome


class _ChannelBroken(Exception):
    """The channel was closed by the broker; ``cause`` is pika's reason."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Publisher:
    """Owns one BlockingConnection with confirms on; use from ONE thread."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        name: str,
        user_id: str | None = None,
        declare: Callable[[BlockingChannel], None] | None = None,
    ) -> None:
        self._settings = settings
        self._name = name
        self._user_id = user_id
        self._declare = declare
        self._extra_declarations: list[Callable[[BlockingChannel], None]] = []
        self._connection: BlockingConnection | None = None
        self._channel: Channel | None = None
        self._channel_error: BaseException | None = None
        self._seq = 0
        self._window = _Window()
        self._where = f"{name} at {address(settings)}"
        with_retries(f"connect {self._where}", self._connect)

    # --- public ---------------------------------------------------------------------

    def publish(
        self,
        exchange: str,
        routing_key: str,
        message: pydantic.BaseModel,
        *,
        persistent: bool = True,
    ) -> None:
        """Publish one message and wait for its confirm; PublishFailed if the broker
        nacks, cannot route it or does not confirm in time."""
        (error,) = self._publish_all([(exchange, routing_key, message)], persistent)
        if error is not None:
            raise error

    def publish_batch(
        self, items: Sequence[tuple[str, str, pydantic.BaseModel]]
    ) -> list[BrokerError | None]:
        """Publish all (persistent), then wait for all confirms; one error or None each."""
        return self._publish_all(items, True)

    def declare(self, declaration: Callable[[BlockingChannel], None]) -> None:
        """Run ``declaration`` on a channel of this connection now, and again after every
        reconnect (a restarted broker may have lost non-durable state). A declaration the
        broker refuses raises (translated) and is not kept, so it cannot spoil reconnects."""
        try:
            connection, _ = self._ready()
            channel = connection.channel()
            try:
                declaration(channel)
            finally:
                if channel.is_open:
                    channel.close()
        except CONNECTION_ERRORS as exc:
            raise translate(exc, f"declare via {self._where}") from exc
        self._extra_declarations.append(declaration)

    def keepalive(self) -> None:
        """Service the idle connection: send and check AMQP heartbeats.

        A BlockingConnection does heartbeats only inside its own calls, so a publisher that
        sits idle longer than two heartbeat intervals is closed by the broker ("missed
        heartbeats from client") and its next publish first waits for a reconnect. Owners
        call this from their own thread whenever they are idle. A dead connection is only
        dropped here: the next publish reconnects (with its retries)."""
        connection = self._connection
        if connection is None:
            return
        try:
            connection.process_data_events(time_limit=0)
        except CONNECTION_ERRORS as exc:
            logger.info(
                "publisher.idle_connection_lost: %s: %s",
                self._where,
                describe(exc),
                extra={"publisher": self._name},
            )
            self._drop()

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- connection -----------------------------------------------------------------

    def _connect(self) -> None:
        connection = open_connection(self._settings, name=self._name)
        try:
            blocking = connection.channel()
            if self._declare is not None:
                self._declare(blocking)
            for declaration in self._extra_declarations:
                declaration(blocking)
            channel = self._async_core(blocking)
            channel.add_on_return_callback(self._on_return)
            channel.add_on_close_callback(self._on_channel_closed)
            selected: list[bool] = []

            def on_selected(_frame: Method[Confirm.SelectOk]) -> None:
                selected.append(True)
                _wake(connection)

            channel.confirm_delivery(self._on_confirm, callback=on_selected)
            deadline = time.monotonic() + _CONFIRM_SELECT_TIMEOUT_S
            while not selected and time.monotonic() < deadline:
                connection.process_data_events(time_limit=deadline - time.monotonic())
            if not selected:
                msg = "the broker did not enable publisher confirms"
                raise PublishFailed(msg)
        except BaseException:
            close_quietly(connection)
            raise
        self._connection, self._channel, self._channel_error = connection, channel, None
        self._seq = 0

    @staticmethod
    def _async_core(blocking: BlockingChannel) -> Channel:
        # BlockingChannel has no confirm callback and no timeout; its wrapped Channel does.
        core: Channel = blocking._impl  # type: ignore[attr-defined]  # pika 1.x internal
        return core

    def _drop(self) -> None:
        if self._connection is not None:
            close_quietly(self._connection)
        self._connection = self._channel = None

    def _ready(self) -> tuple[BlockingConnection, Channel]:
        if self._connection is None or self._channel is None or not self._channel.is_open:
            self._drop()
            self._connect()
            metrics.BROKER_RECONNECTS.labels(connection="publisher").inc()
        assert self._connection is not None
        assert self._channel is not None
        return self._connection, self._channel

    # --- callbacks (run inside process_data_events, on the owning thread) -----------

    def _on_confirm(self, frame: Method[Basic.Ack | Basic.Nack]) -> None:
        method = frame.method
        tag = int(method.delivery_tag or 0)
        seqs = [s for s in self._window.by_seq if s <= tag] if method.multiple else [tag]
        for seq in seqs:
            index = self._window.by_seq.pop(seq, None)
            if index is None:
                continue  # a confirm of an earlier, abandoned window
            self._window.results[index] = self._outcome(index, isinstance(method, Basic.Nack))
        if not self._window.by_seq:
            self._wake()

    def _outcome(self, index: int, nacked: bool) -> BrokerError | None:
        if nacked:
            return PublishFailed("the broker nacked the message (it did not store it)")
        reply = self._window.returned.get(self._window.message_ids.get(index, ""))
        if reply is not None:
            return PublishFailed(f"unroutable: {reply}", hint="is the destination declared?")
        return None

    def _on_return(
        self, _channel: Channel, method: Basic.Return, properties: BasicProperties, _body: bytes
    ) -> None:
        # A mandatory message nobody could take: basic.return precedes its basic.ack.
        self._window.returned[properties.message_id or ""] = (
            f"{method.reply_code} {method.reply_text} ({method.exchange} -> {method.routing_key})"
        )

    def _on_channel_closed(self, _channel: Channel, reason: BaseException) -> None:
        self._channel_error = reason
        self._wake()

    def _wake(self) -> None:
        if self._connection is not None:
            _wake(self._connection)

    # --- publishing -----------------------------------------------------------------

    def _publish_all(
        self, items: Sequence[tuple[str, str, pydantic.BaseModel]], persistent: bool
    ) -> list[BrokerError | None]:
        self._window = _Window()
        todo = list(range(len(items)))

        def attempt() -> None:
            pending = [i for i in todo if i not in self._window.results]
            try:
                self._send_and_wait(items, pending, persistent)
            except _ChannelBroken as broken:
                self._fail_rest(len(items), self._channel_failure(broken.cause))
                self._drop()
            except CONNECTION_ERRORS as exc:
                self._drop()
                if is_permanent(exc):
                    self._fail_rest(len(items), translate(exc, f"publish via {self._where}"))
                    return
                raise

        try:
            with_retries(f"publish via {self._where}", attempt)
        except BrokerError as exc:
            self._fail_rest(len(items), exc)
        results = [self._window.results.get(i) for i in range(len(items))]
        for error in results:
            if error is not None:
                logger.warning(
                    "broker.publish_failed: %s",
                    error,
                    extra={"publisher": self._name, "error": type(error).__name__},
                )
        return results

    def _send_and_wait(
        self,
        items: Sequence[tuple[str, str, pydantic.BaseModel]],
        pending: list[int],
        persistent: bool,
    ) -> None:
        connection, channel = self._ready()
        self._window.by_seq.clear()
        for index in pending:
            exchange, routing_key, message = items[index]
            properties = self._properties(message, persistent)
            self._window.message_ids[index] = properties.message_id or ""
            self._seq += 1
            self._window.by_seq[self._seq] = index
            channel.basic_publish(exchange, routing_key, _body(message), properties, True)
        deadline = time.monotonic() + self._settings.confirm_timeout_s
        while self._window.by_seq:
            if self._channel_error is not None:
                raise _ChannelBroken(self._channel_error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail_rest(len(items), PublishFailed("no confirm in time"))
                self._drop()  # late confirms of this window must not meet the next one
                return
            connection.process_data_events(time_limit=remaining)
        if self._channel_error is not None:
            raise _ChannelBroken(self._channel_error)

    def _properties(self, message: pydantic.BaseModel, persistent: bool) -> BasicProperties:
        message_id = getattr(message, "message_id", None)
        return BasicProperties(
            content_type="application/json",
            delivery_mode=DeliveryMode.Persistent if persistent else DeliveryMode.Transient,
            message_id=None if message_id is None else str(message_id),
            type=getattr(message, "type", None),
            user_id=self._user_id,
        )

    def _fail_rest(self, count: int, error: BrokerError) -> None:
        for index in range(count):
            self._window.results.setdefault(index, error)

    @staticmethod
    def _channel_failure(cause: BaseException) -> BrokerError:
        detail = f"the broker closed the channel: {cause}"
        code = reply_code(cause)
        if code == 403:
            return AccessRefused(detail, hint="this user may not publish there", code=code)
        return PublishFailed(detail, code=code)


def _wake(connection: BlockingConnection) -> None:
    """End the current process_data_events wait. Our callbacks run on the channel's
    asynchronous core, which BlockingConnection does not watch: without a ready event it
    would sit out its whole time limit after the confirm we wait for has arrived.

    They run on the owning thread, inside that wait, so a timer due now is the ready event:
    it fires right after the poll that brought the confirm. (``add_callback_threadsafe``
    would do too, at the price of a write to the loop's wake-up socket and one more poll.)"""
    with contextlib.suppress(*CONNECTION_ERRORS):
        connection.call_later(0, _nothing)


def _nothing() -> None:
    pass


def _body(message: pydantic.BaseModel) -> bytes:
    # schemas.messages.encode, for any model: the JSON body.
    return message.model_dump_json().encode()
