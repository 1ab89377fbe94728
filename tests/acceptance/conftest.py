"""Fixtures for the CLI's acceptance tests: the ``scaleout`` command run as a subprocess
(``python -m dispatcher.cli``) against SQLite catalogs in ``tmp_path`` and the loopback
RabbitMQ (``make services`` starts it; a test that needs it fails without it)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.broker import tls_broker, vhost
from tests.fixtures.polling import wait_for

__all__ = ["tls_broker", "vhost"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sales_etl"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Result:
    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"$ scaleout {' '.join(self.argv)} -> {self.returncode}\n{self.stdout}{self.stderr}"


@dataclass
class Cli:
    """Runs ``scaleout`` with a clean ``SCALEOUT_*`` environment plus ``env``."""

    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def environment(self, extra: dict[str, str | None] | None = None) -> dict[str, str]:
        """os.environ without SCALEOUT_*, then ours, then ``extra`` (None removes)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOUT_")}
        merged: dict[str, str | None] = {**base, "COLUMNS": "200", **self.env, **(extra or {})}
        return {k: v for k, v in merged.items() if v is not None}

    def run(
        self, *argv: str, timeout: float = 60, env: dict[str, str | None] | None = None
    ) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "dispatcher.cli", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.cwd,
            env=self.environment(env),
            check=False,
        )
        return Result(argv, done.returncode, done.stdout, done.stderr)

    def ok(self, *argv: str, **kwargs: Any) -> Result:
        result = self.run(*argv, **kwargs)
        assert result.returncode == 0, str(result)
        return result

    def spawn(self, *argv: str, log: Path, env: dict[str, str | None]) -> subprocess.Popen[bytes]:
        with log.open("wb") as handle:
            return subprocess.Popen(
                [sys.executable, "-m", "dispatcher.cli", *argv],
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.environment(env),
            )


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def broker_is_up() -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError:
        pytest.fail("no RabbitMQ on 127.0.0.1:5672: run `make services`")


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ssisdb.sqlite3'}"


@pytest.fixture
def cli(tmp_path: Path, catalog_url: str) -> Cli:
    """The CLI on a fresh (uninitialised) catalog; the broker URL is a closed port."""
    return Cli(
        tmp_path,
        {
            "SCALEOUT_CATALOG__URL": catalog_url,
            "SCALEOUT_BROKER__URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F",
            # `catalog init` writes the catalog key there: one per test, not in $HOME.
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        },
    )


@pytest.fixture
def ready(cli: Cli) -> Cli:
    """The CLI on an initialised catalog with examples/sales_etl deployed to folder F."""
    cli.ok("catalog", "init")
    cli.ok("deploy", str(EXAMPLE), "--folder", "F")
    return cli


def rabbitmqctl(*args: str) -> None:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


@pytest.fixture
def plain_broker() -> Iterator[str]:
    """A fresh vhost on the loopback RabbitMQ for guest, deleted afterwards, so a test's
    master never competes with another suite's for the status queue; its amqp:// URL."""
    broker_is_up()
    vhost = f"scaleout-acc-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@dataclass
class Cluster:
    cli: Cli
    worker_id: str


@pytest.fixture
def cluster(ready: Cli, tmp_path: Path, plain_broker: str) -> Iterator[Cluster]:
    """A master and one enabled worker running from the CLI on the loopback broker (a
    vhost of their own) with short intervals; the CLI talks to the live broker."""
    with running_cluster(ready, tmp_path, plain_broker) as running:
        yield running


@contextlib.contextmanager
def running_cluster(
    ready: Cli, tmp_path: Path, broker_url: str, *, identity: str = "shared_user"
) -> Iterator[Cluster]:
    """The ``cluster`` fixture's master and worker. With ``identity="user_id"`` the master
    trusts only the AMQP user_id, so a worker logged in as guest is refused as forged: it
    never comes online, and this returns once the master has recorded the refusal."""
    worker_id = f"acc-{uuid.uuid4().hex[:8]}"
    ready.env["SCALEOUT_BROKER__URL"] = broker_url
    ready.ok("workers", "add", worker_id, "--enable", "--max-task-count", "4")
    master = ready.spawn(
        "master",
        log=tmp_path / "master.log",
        env={
            "SCALEOUT_SENDER_IDENTITY": identity,
            "SCALEOUT_DISPATCH_POLL_INTERVAL_MS": "200",
            "SCALEOUT_DEAL_WITH_EXPIRED_TASKS_INTERVAL_MS": "2000",
            "SCALEOUT_MASTER_HEARTBEAT_INTERVAL_MS": "1000",
            "SCALEOUT_METRICS_PORT": "0",
        },
    )
    worker = ready.spawn(
        "worker",
        "--id",
        worker_id,
        log=tmp_path / "worker.log",
        env={
            "SCALEOUT_AGENT_HEARTBEAT_INTERVAL_S": "1",
            "SCALEOUT_TASK_HEARTBEAT_INTERVAL_S": "1",
            "SCALEOUT_TASK_REQUEST_MAX_CPU": "100",
            "SCALEOUT_TASK_REQUEST_MIN_MEMORY_MB": "0",
            "SCALEOUT_MAX_TASK_COUNT": "4",
            "SCALEOUT_MASTER_USER_ID": "guest",
            "SCALEOUT_TASKS_ROOT_FOLDER": str(tmp_path / "w" / "tasks"),
            "SCALEOUT_EXECUTION_LOG_CACHE_FOLDER": str(tmp_path / "w" / "elog"),
            "SCALEOUT_PROJECT_CACHE_FOLDER": str(tmp_path / "w" / "projects"),
        },
    )
    try:

        def ready_to_use() -> bool:
            assert master.poll() is None, (tmp_path / "master.log").read_text()
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            rows = ready.ok("workers", "list", "--json").json()
            [row] = [r for r in rows if r["worker_agent_id"] == worker_id]
            return bool(row["is_online"] if identity != "user_id" else row["last_refusal_time"])

        wait_for(ready_to_use, 30, f"worker {worker_id} to come online (or be refused)")
        yield Cluster(ready, worker_id)
    finally:
        stop(worker)
        stop(master)
