"""A long-lived confirmed Publisher that callers on any thread can use.

pika connections are confined to their thread, and opening one (TCP, TLS, AMQP
handshake, confirm.select) costs tens of milliseconds. The API wakes the master on every
``start_execution``; paying a connection per call would dominate the dispatch latency.
So the link owns one Publisher on its own thread, runs each call there, and hands the
outcome back with a timeout: a dead broker costs the caller at most ``timeout_s``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from dispatcher.broker.publisher import Publisher
from dispatcher.errors import BrokerError
from dispatcher.settings import BrokerSettings

logger = logging.getLogger(__name__)

Call = Callable[[Publisher], None]


class BrokerLink:
    def __init__(self, settings: BrokerSettings, *, name: str, timeout_s: float) -> None:
        self._settings = settings
        self._name = name
        self._timeout_s = timeout_s
        self._calls: queue.SimpleQueue[tuple[Call, Future[None]] | None] = queue.SimpleQueue()
        self._publisher: Publisher | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._publisher is not None

    def call(self, fn: Call) -> str:
        """Run ``fn(publisher)`` on the link's thread; '' when it succeeded, else why not."""
        future: Future[None] = Future()
        self._ensure_thread()
        self._calls.put((fn, future))
        try:
            future.result(self._timeout_s)
        except FutureTimeout:
            return f"no answer within {self._timeout_s:g} s"
        except (BrokerError, OSError) as exc:
            return str(exc)
        return ""

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._calls.put(None)
            thread.join(self._timeout_s)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        try:
            while (item := self._calls.get()) is not None:
                fn, future = item
                if future.set_running_or_notify_cancel():
                    self._run(fn, future)
        finally:
            self._drop()

    def _run(self, fn: Call, future: Future[None]) -> None:
        try:
            if self._publisher is None:
                self._publisher = Publisher(self._settings, name=self._name)
            fn(self._publisher)
        except (BrokerError, OSError) as exc:
            self._drop()  # the next call reconnects
            future.set_exception(exc)
        except BaseException as exc:  # a bug in ``fn`` must reach its caller, not kill us
            future.set_exception(exc)
        else:
            future.set_result(None)

    def _drop(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                publisher.close()
            except BrokerError:
                logger.debug("broker_link.close_failed", exc_info=True)
