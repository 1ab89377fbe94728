"""The master's tests use the real catalog (SQLite and PostgreSQL) and the TLS broker."""

from __future__ import annotations

from tests.fixtures.broker import tls_broker, vhost
from tests.fixtures.catalog import catalog, catalog_url, pg_catalog_url, pg_template

__all__ = ["catalog", "catalog_url", "pg_catalog_url", "pg_template", "tls_broker", "vhost"]
