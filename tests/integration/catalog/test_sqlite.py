"""The embedded SQLite catalog: WAL, foreign keys, and writers that queue behind each other."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dispatcher.catalog import Catalog
from dispatcher.catalog.engine import create
from dispatcher.errors import CatalogUnavailable


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    path = tmp_path / "ssisdb.sqlite3"
    catalog = Catalog.open(f"sqlite:///{path}")
    catalog.init()
    catalog.close()
    return path


def test_file_is_in_wal_mode_with_foreign_keys(sqlite_path: Path) -> None:
    """The catalog file uses WAL, and the catalog's connections enforce foreign keys."""
    engine = create(f"sqlite:///{sqlite_path}", connection_timeout_s=3)
    with engine.connect() as conn:
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        foreign_keys = conn.exec_driver_sql("PRAGMA foreign_keys").scalar()
        busy_ms = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    engine.dispose()

    assert (journal, foreign_keys, busy_ms) == ("wal", 1, 3000)


def test_reads_do_not_wait_for_a_writer_but_writes_queue(sqlite_path: Path) -> None:
    """While another connection holds the write lock, reads answer and a write waits, then
    fails as CatalogUnavailable once the busy timeout passes."""
    catalog = Catalog.open(f"sqlite:///{sqlite_path}", connection_timeout_s=1)
    holder = sqlite3.connect(sqlite_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert catalog.list_worker_agents() == []
        with pytest.raises(CatalogUnavailable, match="locked"):
            catalog.add_worker_agent("w1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    catalog.add_worker_agent("w1")

    assert [w.worker_agent_id for w in catalog.list_worker_agents()] == ["w1"]
    catalog.close()
