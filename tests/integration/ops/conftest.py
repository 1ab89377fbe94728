"""Fixtures for the ops tests: the TLS RabbitMQ node (helper fixtures in tests/fixtures/)."""

from __future__ import annotations

from tests.fixtures.broker import tls_broker  # noqa: F401  # pytest finds fixtures by name
