"""Fixtures of the chaos suite: the TLS broker, a fresh vhost, catalogs on SQLite and
PostgreSQL, small clusters of one and two workers; and the checker's lines, printed again
as the very last lines of the run."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.catalog import Catalog
from tests.chaos.cluster import Cluster, small_cluster_running
from tests.fixtures.broker import TlsBroker, tls_broker, vhost
from tests.fixtures.catalog import catalog_url, pg_catalog_url, pg_template

__all__ = ["catalog_url", "pg_catalog_url", "pg_template", "tls_broker", "vhost"]

CHECKER_LINES: list[str] = []
"""``<catalog>: executions=... `` lines of the cluster runs, in the order they ran."""


@pytest.fixture
def one_worker(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str
) -> Iterator[tuple[Cluster, Catalog]]:
    yield from small_cluster_running(tmp_path, tls_broker, vhost, ("w1",))


@pytest.fixture
def two_workers(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str
) -> Iterator[tuple[Cluster, Catalog]]:
    yield from small_cluster_running(tmp_path, tls_broker, vhost, ("w1", "w2"))


def pytest_unconfigure(config: pytest.Config) -> None:
    if CHECKER_LINES:
        sys.stdout.write("\n" + "\n".join(CHECKER_LINES) + "\n")
        sys.stdout.flush()
