"""BrokerLink: one connection reused across calls from any thread; a dead broker costs a
caller at most the timeout and a clear reason."""

from __future__ import annotations

import threading
import time

from dispatcher.broker import Publisher, topology
from dispatcher.broker.link import BrokerLink
from dispatcher.settings import BrokerSettings
from schemas.messages import DispatchWake
from tests.fixtures.broker import TlsBroker


def _wake(publisher: Publisher) -> None:
    publisher.publish(
        topology.STATUS_EXCHANGE, topology.WAKE_ROUTING_KEY, DispatchWake(), persistent=False
    )


def test_calls_from_many_threads_share_one_connection(tls_broker: TlsBroker, vhost: str) -> None:
    """Calls from several threads all succeed over the link's single Publisher."""
    link = BrokerLink(
        tls_broker.settings_for("scaleout-master", vhost), name="test-link", timeout_s=10
    )
    seen: list[int] = []
    results: list[str] = []

    def call() -> None:
        results.append(link.call(lambda p: (_wake(p), seen.append(id(p)))[0]))

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    link.close()

    assert results == [""] * 5
    assert len(set(seen)) == 1


def test_a_dead_broker_costs_at_most_the_timeout() -> None:
    """A broker that never answers yields a reason after the timeout, not a hang."""
    silent = BrokerSettings(url="amqp://guest:guest@127.0.0.1:9/%2F", connect_timeout_s=30)
    link = BrokerLink(silent, name="test-link", timeout_s=0.5)
    started = time.monotonic()

    reason = link.call(_wake)

    assert reason
    assert time.monotonic() - started < 5
