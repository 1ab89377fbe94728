"""Engines per dialect, the database clock, and translation of driver errors.

SQLite gets WAL, foreign keys, a busy timeout and ``BEGIN IMMEDIATE`` for every
transaction (SQLAlchemy's pysqlite recipe), so concurrent writers queue instead of failing
halfway. PostgreSQL runs READ COMMITTED; SQL Server goes through pyodbc, imported only when
an ``mssql+pyodbc`` URL is opened.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from dispatcher.catalog.tables import Tables, tables_for
from dispatcher.errors import (
    CatalogError,
    CatalogNotInitialised,
    CatalogUnavailable,
    MissingDriver,
    OperationRefused,
)

INIT_HINT = "run `scaleout catalog init` to create or upgrade the catalog"
ODBC_HINT = (
    "install unixODBC (`apt-get install unixodbc`) and Microsoft's ODBC Driver 18 for SQL "
    "Server (or FreeTDS: `apt-get install tdsodbc`), then `pip install pyodbc`"
)
READ_ONLY = "scaleout_read_only"
"""Execution option: the transaction only reads (SQLite then begins DEFERRED)."""
_SUPPORTED = {"sqlite", "postgresql", "mssql"}
_CONFLICT_MARKERS = ("deadlock", "40p01", "40001", "could not serialize")
_MISSING_TABLE_MARKERS = ("no such table", "undefinedtable", "42p01", "42s02", "invalid object")
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, tuple[threading.RLock, float]] = (
    weakref.WeakKeyDictionary()
)
"""One write lock per SQLite engine: see :func:`_writer_turn`."""


@dataclass(frozen=True, slots=True)
class Tx:
    """One open transaction: its connection, the tables, and the database's now."""

    conn: Connection
    t: Tables
    now: datetime


@dataclass(frozen=True, slots=True)
class Timing:
    """The catalog's time settings (seconds)."""

    worker_offline_after_s: float = 180.0
    initial_lease_s: float = 300.0


def redact(url: str | URL) -> str:
    """The URL without its password, safe for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<unparsable catalog URL>"


def create(url: str, *, connection_timeout_s: int) -> Engine:
    """An engine for ``url``; connects lazily. Unknown dialects and drivers -> MissingDriver."""
    parsed = _parse(url)
    name = parsed.get_backend_name()
    if name not in _SUPPORTED:
        msg = f"unsupported catalog database {name!r} in {redact(parsed)}"
        raise MissingDriver(msg, hint="use sqlite:///, postgresql+psycopg:// or mssql+pyodbc://")
    try:
        engine = sa.create_engine(parsed, **_engine_options(name, connection_timeout_s))
    except ImportError as exc:
        raise MissingDriver(f"no driver for {redact(parsed)}: {exc}", hint=_hint(name)) from exc
    except sa_exc.NoSuchModuleError as exc:
        raise MissingDriver(f"unknown driver in {redact(parsed)}", hint=_hint(name)) from exc
    if name == "sqlite":
        _setup_sqlite(engine, connection_timeout_s)
        _open_existing_only(engine)
        _SQLITE_WRITERS[engine] = (threading.RLock(), float(connection_timeout_s))
    return engine


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except sa_exc.ArgumentError as exc:
        raise MissingDriver(
            "the catalog URL cannot be parsed", hint="see `scaleout --help`"
        ) from exc


def _hint(name: str) -> str:
    return ODBC_HINT if name == "mssql" else "pip install the driver named in the URL"


IDLE_IN_TRANSACTION_TIMEOUT_S = 10
"""PostgreSQL ends a session idle inside a transaction this long. None of ours idles there
but a process that was paused (SIGSTOP, a VM freeze): its open transaction would hold its
row locks, the leader lease's among them, and keep a standby from taking over."""

LOCK_TIMEOUT_S = IDLE_IN_TRANSACTION_TIMEOUT_S
"""PostgreSQL aborts a statement that waited this long for a lock, which releases the locks
its transaction held. Without it the idle timeout alone does not bound a pause: a paused
master's session that was waiting for its sibling's lock runs on when the sibling is
ended, then idles holding the lease row's lock for another 10 s, and so on down the chain
(seen: a takeover 21 s after the pause). No transaction of ours holds a lock this long."""


def _engine_options(name: str, timeout_s: int) -> dict[str, Any]:
    if name == "postgresql":
        idle_ms = IDLE_IN_TRANSACTION_TIMEOUT_S * 1000
        lock_ms = LOCK_TIMEOUT_S * 1000
        connect_args = {
            "connect_timeout": timeout_s,
            "options": (
                f"-c idle_in_transaction_session_timeout={idle_ms} -c lock_timeout={lock_ms}"
            ),
        }
        return {"connect_args": connect_args, "pool_pre_ping": True}
    if name == "mssql":
        return {"connect_args": {"timeout": timeout_s}, "pool_pre_ping": True}
    return {"connect_args": {"timeout": timeout_s}}


def _setup_sqlite(engine: Engine, timeout_s: int) -> None:
    """The pysqlite recipe: the driver leaves transactions to us, and we begin IMMEDIATE."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Reads begin DEFERRED: with WAL they never wait for, nor hold up, a writer.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")


def sqlite_file(url: URL) -> Path | None:
    """The database file of a sqlite URL; None for an in-memory database."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in {"", ":memory:"}:
        return None
    if database.startswith("file:") or url.query.get("uri"):
        return None  # a URI the operator wrote: its own mode applies
    return Path(database)


def _open_existing_only(engine: Engine) -> None:
    """Open the file read-write but never create it (``mode=rw``): a mistyped URL would
    otherwise leave an empty database behind. :func:`create_sqlite_file` creates it."""
    path = sqlite_file(engine.url)
    if path is None:
        return

    @sa.event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        filename = cargs[0] if cargs else cparams.pop("database", str(path))
        cargs[:] = [f"file:{quote(str(filename))}?mode=rw"]
        cparams["uri"] = True


def create_sqlite_file(engine: Engine) -> None:
    """Create the SQLite file of ``engine`` when missing (``catalog init`` only)."""
    path = sqlite_file(engine.url)
    if path is None or path.exists():
        return
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        msg = f"cannot create the catalog file {path}: {exc}"
        raise CatalogUnavailable(msg, hint="check that its folder exists and is writable") from None


SelectT = TypeVar("SelectT", bound=sa.Select[Any])


def locked(query: SelectT, table: sa.Table, *, skip_locked: bool = False) -> SelectT:
    """``query`` taking row locks on ``table``'s rows until the transaction ends.

    PostgreSQL: ``FOR UPDATE [SKIP LOCKED]``. SQL Server ignores FOR UPDATE, so it gets the
    table hints ``UPDLOCK, ROWLOCK[, READPAST]``. SQLite needs neither: its transactions
    begin IMMEDIATE, so writers are already serialised.
    """
    hint = "WITH (UPDLOCK, ROWLOCK, READPAST)" if skip_locked else "WITH (UPDLOCK, ROWLOCK)"
    return query.with_for_update(skip_locked=skip_locked).with_hint(table, hint, "mssql")


def clock_query(dialect_name: str) -> sa.TextClause:
    """The statement that reads the database's now, sub-second and UTC where it matters."""
    if dialect_name == "sqlite":
        return sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
    if dialect_name == "mssql":
        return sa.text("SELECT SYSUTCDATETIME()")
    return sa.text("SELECT CURRENT_TIMESTAMP")


def database_now(conn: Connection) -> datetime:
    """The database's clock, once per transaction; naive UTC on SQLite, aware elsewhere."""
    name = conn.dialect.name
    if name == "sqlite":
        # SQLite's 'now' is this process's own system clock, so reading it needs no
        # statement: one round trip less in every transaction of the hot path.
        return datetime.now(UTC).replace(tzinfo=None)
    value = conn.execute(clock_query(name)).scalar_one()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        msg = f"the database clock returned {value!r}"
        raise CatalogError(msg)
    if name == "sqlite":
        return value.replace(tzinfo=None)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def aware(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite returns naive UTC)."""
    return None if value is None else utc(value)


def utc(value: datetime) -> datetime:
    """A time from the database as an aware UTC datetime."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id(result: sa.CursorResult[Any]) -> int:
    """The identity an INSERT generated."""
    key = result.inserted_primary_key
    if key is None:
        msg = "the database returned no identity for an insert"
        raise CatalogError(msg)
    return int(key[0])


def inserted_ids(tx: Tx, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` into ``table``; the identities generated, in the rows' order. One
    statement (RETURNING, ordered by parameter) where the dialect can keep the order;
    one insert per row on SQL Server, whose ordered bulk insert needs a sentinel column
    our tables do not have."""
    if tx.conn.dialect.name == "mssql":
        return [new_id(tx.conn.execute(sa.insert(table), row)) for row in rows]
    [key] = table.primary_key.columns
    insert = sa.insert(table).returning(key, sort_by_parameter_order=True)
    return [int(value) for value in tx.conn.execute(insert, rows).scalars()]


def to_db(tx: Tx, value: datetime) -> datetime:
    """A time to store: naive UTC on SQLite (which keeps text), aware elsewhere."""
    value = utc(value)
    return value.replace(tzinfo=None) if tx.conn.dialect.name == "sqlite" else value


@contextmanager
def transaction(engine: Engine, *, read_only: bool = False) -> Iterator[Tx]:
    """A transaction with the clock read, translating driver errors at this edge."""
    with translated(engine), _writer_turn(engine, read_only), engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: read_only})
        with conn.begin():
            yield Tx(conn=conn, t=tables_for(conn.dialect.name), now=database_now(conn))


@contextmanager
def _writer_turn(engine: Engine, read_only: bool) -> Iterator[None]:
    """SQLite writers of one process take turns on a lock before BEGIN IMMEDIATE.

    SQLite serialises writers anyway, but a writer that finds the database locked sleeps
    in its busy handler with growing pauses (up to 100 ms) instead of waking when the lock
    is free: the master's dispatch and status threads lost tens of milliseconds per
    transaction that way. A waiter on this lock wakes as soon as it is released. Other
    processes still meet at SQLite's own lock."""
    writer = None if read_only else _SQLITE_WRITERS.get(engine)
    if writer is None:
        yield
        return
    lock, timeout_s = writer
    if not lock.acquire(timeout=timeout_s):
        msg = f"no turn to write to {redact(engine.url)} within {timeout_s:g} s"
        raise CatalogUnavailable(msg, hint="another thread of this process holds a long write")
    try:
        yield
    finally:
        lock.release()


@contextmanager
def translated(engine: Engine) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors into dispatcher.errors classes."""
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise OperationRefused(f"the catalog refused the change: {_first_line(exc)}") from exc
    except sa_exc.DBAPIError as exc:
        raise classify(exc, engine.url) from exc


def classify(exc: sa_exc.DBAPIError, url: URL) -> CatalogError:
    """The error a driver failure means for the caller."""
    text = f"{type(exc.orig).__name__} {exc.orig} {getattr(exc.orig, 'sqlstate', '')}".lower()
    if "can't open lib" in text or "data source name not found" in text:
        return _missing_odbc_driver(url)
    path = sqlite_file(url)
    if path is not None and not path.exists() and path.absolute().parent.is_dir():
        msg = f"the catalog file {path} does not exist: the catalog is not initialised"
        return CatalogNotInitialised(msg, hint=INIT_HINT)
    if any(marker in text for marker in _MISSING_TABLE_MARKERS):
        return CatalogNotInitialised(
            f"the catalog at {redact(url)} is not initialised", hint=INIT_HINT
        )
    if any(marker in text for marker in _CONFLICT_MARKERS):
        return CatalogUnavailable(
            f"the catalog at {redact(url)} aborted a transaction that conflicted with another",
            hint="retry: the aborted operation changed nothing",
        )
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return CatalogUnavailable(
            f"cannot use the catalog at {redact(url)}: {_first_line(exc)}", hint=_reach_hint(url)
        )
    return CatalogError(f"catalog error: {_first_line(exc)}")


def _missing_odbc_driver(url: URL) -> MissingDriver:
    """unixODBC's "Can't open lib 'X' : file not found": the URL names an ODBC driver that
    is not installed (or not registered in odbcinst.ini)."""
    driver = url.query.get("driver") or "the ODBC driver"
    named = driver if isinstance(driver, str) else driver[0]
    msg = f"the ODBC driver {named!r} named in {redact(url)} is not installed"
    hint = (
        "install it (Microsoft's `msodbcsql18` package for 'ODBC Driver 18 for SQL Server', "
        "or FreeTDS: `apt-get install tdsodbc` and driver=FreeTDS); `odbcinst -q -d` lists "
        "the drivers this machine has"
    )
    return MissingDriver(msg, hint=hint)


def _reach_hint(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return (
            "check that the file's folder exists and is writable; 'database is locked' means "
            "another process held the write lock longer than connection_timeout_s"
        )
    return "check that the database is running and the URL, user and password are right"


def _first_line(exc: sa_exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc).__name__
