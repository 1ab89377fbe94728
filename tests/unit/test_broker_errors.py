"""What an operator reads when the broker cannot be reached: the address, never the
password, and never a bare ``AMQPConnectionError: ``."""

from __future__ import annotations

import pika.exceptions as pe

from dispatcher.broker.connection import address, describe, translate
from dispatcher.errors import BrokerUnavailable
from dispatcher.settings import BrokerSettings


def test_the_address_names_host_port_and_a_non_default_vhost_without_credentials() -> None:
    plain = BrokerSettings(url="amqp://guest:secret@127.0.0.1:5999/%2F")
    tls = BrokerSettings(url="amqps://mq.example.internal/scaleout")

    assert address(plain) == "127.0.0.1:5999"
    assert address(tls) == "mq.example.internal:5671 vhost scaleout"
    assert "secret" not in address(plain)


def test_a_refused_connection_is_described_in_words() -> None:
    assert describe(pe.AMQPConnectionError()) == (
        "AMQPConnectionError: no connection (refused, unreachable or timed out)"
    )
    assert describe(ConnectionRefusedError(111, "Connection refused")) == (
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )


def test_an_unreachable_broker_becomes_broker_unavailable_with_the_address() -> None:
    settings = BrokerSettings(url="amqp://guest:secret@127.0.0.1:5999/%2F")

    error = translate(pe.AMQPConnectionError(), f"connect master at {address(settings)}")

    assert isinstance(error, BrokerUnavailable)
    assert str(error) == (
        "connect master at 127.0.0.1:5999: "
        "AMQPConnectionError: no connection (refused, unreachable or timed out)"
    )
    assert error.hint == "is the broker up and reachable?"
