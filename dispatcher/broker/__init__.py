"""The RabbitMQ adapter: what the master and the workers import to talk to the broker.

- :class:`Publisher`: one connection, publisher confirms, mandatory routing, bounded
  reconnect; :meth:`Publisher.publish` and :meth:`Publisher.publish_batch`.
- :class:`Consumer`: one queue on its own connection; a handler thread gets batches of
  :class:`Delivery` and returns one :class:`Verdict` each (ACK, DEAD_LETTER, REQUEUE).
- :func:`connection_parameters`: TLS with host name checks, EXTERNAL login by client
  certificate, plain AMQP only on loopback; :func:`login_user`, the user it logs in as.

Modules: ``connection`` (parameters, error translation, reconnect policy), ``tls``,
``publisher``, ``consumer``, ``link`` (a publisher owned by one thread, for callers that
must not block), ``topology`` (every name and declaration) and ``provisioning`` (users and
permissions through the management API). pika exceptions never leave this package: they
become :mod:`dispatcher.errors` classes. The broker package never imports the catalog.
"""

from __future__ import annotations

from pika.adapters.blocking_connection import BlockingChannel as Channel

from dispatcher.broker.connection import connection_parameters, login_user
from dispatcher.broker.consumer import ACK, Consumer, Delivery, Disposition, Verdict
from dispatcher.broker.publisher import Publisher

__all__ = [
    "ACK",
    "Channel",
    "Consumer",
    "Delivery",
    "Disposition",
    "Publisher",
    "Verdict",
    "connection_parameters",
    "login_user",
]
