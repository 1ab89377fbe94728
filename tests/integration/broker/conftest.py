"""The TLS broker fixtures for this package's tests."""

from __future__ import annotations

from tests.fixtures.broker import tls_broker, vhost

__all__ = ["tls_broker", "vhost"]
