"""The RabbitMQ adapter: what the master and the workers import to talk to the broker.

- :class:`Publisher`: one connection, publisher confirms, mandatory routing, bounded
  reconnect; :meth:`Publisher.publish` and :meth:`Publisher.publish_batch`.
- :class:`Consumer`: one queue on its own connection; a handler thread gets batches of
  :class:`Delivery` and returns one :class:`Verdict` each (ACK, DEAD_LETTER, REQUEUE).
- :func:`connection_parameters`: TLS with host name checks, EXTERNAL login by client
  certificate, plain AMQP only on loopback.

pika exceptions never leave this package: they become :mod:`dispatcher.errors` classes.
The implementation lives in ``broker_connection``, ``broker_publisher`` and
``broker_consumer``; import from here.
"""

from __future__ import annotations

from dispatcher.broker_connection import connection_parameters
from dispatcher.broker_consumer import ACK, Consumer, Delivery, Disposition, Verdict
from dispatcher.broker_publisher import Publisher

__all__ = [
    "ACK",
    "Consumer",
    "Delivery",
    "Disposition",
    "Publisher",
    "Verdict",
    "connection_parameters",
]
