"""The benchmark's plumbing: a throw-away RabbitMQ vhost, throw-away catalog databases,
child processes that always stop, a UDP completion counter for the peers, and psutil
sampling of a process's CPU and memory.

Everything here is bounded: every wait has a deadline, every child is killed at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

PG_URL_ENV = "SCALEOUT_BENCH_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
RABBIT_HOST = "127.0.0.1:5672"
STOP_GRACE_S = 10.0


# -- RabbitMQ ----------------------------------------------------------------------------


def _ctl(*args: str, attempts: int = 5) -> None:
    """rabbitmqctl, retried: its Erlang distribution start fails now and then on a busy box."""
    for attempt in range(attempts):
        try:
            subprocess.run(
                ["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            if attempt == attempts - 1:
                raise
            time.sleep(2)
        else:
            return


@contextlib.contextmanager
def fresh_vhost() -> Iterator[str]:
    """A new vhost on the system RabbitMQ with guest's full permissions; deleted after."""
    name = f"scaleout-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _ctl("delete_vhost", name)


def amqp_url(vhost: str) -> str:
    return f"amqp://guest:guest@{RABBIT_HOST}/{quote(vhost, safe='')}"


def rabbitmq_version() -> str:
    try:
        out = subprocess.run(
            ["rabbitmqctl", "-q", "version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return "?"
    return out.strip() or "?"


# -- catalog databases -------------------------------------------------------------------


def pg_base_url() -> str:
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)


def _pg_admin() -> psycopg.Connection[tuple[object, ...]]:
    url = make_url(pg_base_url()).set(drivername="postgresql")
    return psycopg.connect(
        url.render_as_string(hide_password=False), autocommit=True, connect_timeout=10
    )


def pg_version() -> str:
    with _pg_admin() as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


@contextlib.contextmanager
def catalog_database(kind: str, folder: Path, tag: str) -> Iterator[str]:
    """A new, empty catalog database's URL: a SQLite file in ``folder`` or a PostgreSQL
    database (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'ssisdb-{tag}.sqlite3'}"
        return
    name = f"scaleout_bench_{os.getpid()}_{tag}".replace("-", "_")
    with _pg_admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(pg_base_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# -- child processes ---------------------------------------------------------------------


@dataclass
class Children:
    """Child processes, each in its own session with its log in ``folder``."""

    folder: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOUT_")}
        base["PYTHONUNBUFFERED"] = "1"
        with (self.folder / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv,
                env={**base, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.folder,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def python(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, *args], env, cwd=Path.cwd())

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self, names: list[str] | None = None) -> None:
        """SIGTERM (the whole session), wait, then SIGKILL whoever is left."""
        chosen = {n: p for n, p in self.procs.items() if names is None or n in names}
        for proc in chosen.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in chosen.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.1))
        for proc in chosen.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for name in chosen:
            del self.procs[name]


# -- the peers' completion signal --------------------------------------------------------


class Completions:
    """Counts one UDP datagram per finished task (sent by the peers' no-op tasks) and keeps
    the arrival times: the peers record nothing, so this is how we see them finish."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.times: list[float] = []

    def wait(self, count: int, timeout_s: float) -> list[float]:
        """Arrival times (time.time()) of up to ``count`` datagrams within ``timeout_s``."""
        self.times = []
        deadline = time.monotonic() + timeout_s
        while len(self.times) < count and time.monotonic() < deadline:
            try:
                self._sock.recv(64)
            except TimeoutError:
                continue
            self.times.append(time.time())
        return self.times

    def close(self) -> None:
        self._sock.close()


# -- process sampling --------------------------------------------------------------------


class Sampler:
    """Peak RSS of a process tree, sampled on a thread every ``interval_s``."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_rss = 0
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
            self._stop.wait(self._interval_s)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children so far."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system + times.children_user + times.children_system)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# -- where the work went: RabbitMQ's CPU, PostgreSQL's commits ---------------------------


def beam_pid(port: int = 5672) -> int | None:
    """The Erlang VM (beam.smp) of the RabbitMQ node the bench uses: the process that
    listens on ``port`` (other nodes, such as the TLS node or a fault suite's, run beside)."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return int(conn.pid) if conn.pid else None
    return None


def pg_commits(database: str) -> int:
    """``xact_commit`` of one PostgreSQL database (pg_stat_database). Backends flush their
    counts about once a second while busy and ten seconds after going idle, so a reading
    is exact only after the database's clients have been idle (or gone) that long."""
    with _pg_admin() as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(str(row[0])) if row else 0


STATS_SETTLE_S = 11.0
"""PostgreSQL's idle stats flush (PGSTAT_IDLE_INTERVAL, 10 s) and a margin."""


def database_of(url: str) -> str:
    return str(make_url(url).database or "")
