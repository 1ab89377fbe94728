"""Fixtures of the chaos suite: the TLS broker, a fresh vhost, catalogs on SQLite and
PostgreSQL; and the checker's lines, printed again as the very last lines of the run."""

from __future__ import annotations

import sys

import pytest

from tests.fixtures.broker import tls_broker, vhost
from tests.fixtures.catalog import pg_catalog_url, pg_template

__all__ = ["pg_catalog_url", "pg_template", "tls_broker", "vhost"]

CHECKER_LINES: list[str] = []
"""``<catalog>: executions=... `` lines of the cluster runs, in the order they ran."""


def pytest_unconfigure(config: pytest.Config) -> None:
    if CHECKER_LINES:
        sys.stdout.write("\n" + "\n".join(CHECKER_LINES) + "\n")
        sys.stdout.flush()
