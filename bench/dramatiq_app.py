"""The Dramatiq peer: its RabbitMQ broker and one no-op actor that sends a UDP datagram to
the bench, which counts completions (Dramatiq records nothing we could read).

``BENCH_BROKER_URL``, ``BENCH_QUEUE`` and ``BENCH_UDP_PORT`` come from ``bench.peers``.
"""

from __future__ import annotations

import os
import socket

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

_TARGET = ("127.0.0.1", int(os.environ.get("BENCH_UDP_PORT", "9")))
_SOCKET = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

broker = RabbitmqBroker(url=os.environ.get("BENCH_BROKER_URL", "amqp://"))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=os.environ.get("BENCH_QUEUE", "bench"), max_retries=0)
def noop() -> None:
    _SOCKET.sendto(b"1", _TARGET)
