"""The peers, each with W worker processes of ``slots`` concurrent tasks (scaleout's
workers x MaxTaskCount): Celery 5 (prefork pool, ``acks_late``, no result backend), Celery 5
with a database result backend on a catalog database and ``task_track_started``, Dramatiq
with its RabbitMQ broker (threads), on the same RabbitMQ (a queue of their own on the
bench's vhost); and procrastinate on the same PostgreSQL (its own database).

Each run is measured as scaleout is: the queue is filled first (enqueue outside the timed
window), then the worker processes start; throughput is (N - 1) / (first completion ->
last completion), which leaves out every system's start-up alike.
``python -m bench.peers fill celery|dramatiq|procrastinate N`` is the filler, run as a
child with the same environment as the workers.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench.infra import Children, Completions, database_of, pg_commits


@dataclass
class PeerResult:
    name: str
    workers: int
    tasks: int
    completed: int
    elapsed_s: float
    stored: int | None = None
    """Rows the result backend holds with status SUCCESS (the like-for-like peer)."""
    commits: int | None = None
    """Commits in the peer's PostgreSQL database over the run (None: not counted)."""

    @property
    def per_s(self) -> float:
        if self.completed < 2 or self.elapsed_s <= 0:
            return 0.0
        return (self.completed - 1) / self.elapsed_s


def celery_backend_url(catalog_url: str) -> str:
    """Celery's ``db+`` form of the catalog's SQLAlchemy URL."""
    return f"db+{catalog_url}"


def run_celery(
    children: Children,
    broker_url: str,
    workers: int,
    tasks: int,
    *,
    slots: int = 1,
    backend_catalog_url: str | None = None,
    timeout_s: float = 120.0,
) -> PeerResult:
    name = "celery+db" if backend_catalog_url else "celery"
    queue = f"bench-{name.replace('+', '-')}-{workers}-{int(time.time())}"
    completions = Completions()
    env = {
        "BENCH_BROKER_URL": broker_url,
        "BENCH_QUEUE": queue,
        "BENCH_UDP_PORT": str(completions.port),
    }
    if backend_catalog_url:
        env["BENCH_RESULT_BACKEND"] = celery_backend_url(backend_catalog_url)
    names = [f"{queue}-w{i}" for i in range(workers)]
    try:
        _fill(children, "celery", tasks, env, queue)
        for index, child in enumerate(names):
            argv = ["-m", "celery", "-A", "bench.celery_app", "worker"]
            # prefork: the database backend pools its connections only in forked children
            argv += ["-P", "prefork", "-c", str(slots)]
            argv += ["-n", f"bench{index}@%h", "-Q", queue, "-l", "WARNING"]
            argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            children.python(child, argv, env)
        times = completions.wait(tasks, timeout_s)
    finally:
        children.stop(names)
        completions.close()
    stored = _stored(backend_catalog_url) if backend_catalog_url else None
    return PeerResult(name, workers, tasks, len(times), _span(times), stored)


def run_dramatiq(
    children: Children,
    broker_url: str,
    workers: int,
    tasks: int,
    *,
    slots: int = 1,
    timeout_s: float = 120.0,
) -> PeerResult:
    queue = f"bench-dramatiq-{workers}-{int(time.time())}"
    completions = Completions()
    env = {
        "BENCH_BROKER_URL": broker_url,
        "BENCH_QUEUE": queue,
        "BENCH_UDP_PORT": str(completions.port),
    }
    child = f"{queue}-workers"
    try:
        _fill(children, "dramatiq", tasks, env, queue)
        argv = ["-m", "dramatiq", "bench.dramatiq_app", "--processes", str(workers)]
        argv += ["--threads", str(slots)]
        children.python(child, argv, env)
        times = completions.wait(tasks, timeout_s)
    finally:
        children.stop([child])
        completions.close()
    return PeerResult("dramatiq", workers, tasks, len(times), _span(times))


def run_procrastinate(
    children: Children,
    database_url: str,
    workers: int,
    tasks: int,
    *,
    slots: int = 1,
    timeout_s: float = 120.0,
) -> PeerResult:
    """procrastinate on its own PostgreSQL database (schema applied by the first fill);
    completions and their times come from its ``procrastinate_events``."""
    dsn = libpq_url(database_url)
    queue = f"bench-procrastinate-{workers}-{int(time.time())}"
    env = {"BENCH_PROCRASTINATE_DSN": dsn, "BENCH_QUEUE": queue}
    names = [f"{queue}-w{i}" for i in range(workers)]
    database = database_of(database_url)
    _fill(children, "procrastinate", tasks, env, queue)
    time.sleep(0.5)  # the filler's backend has flushed its counts on exit
    commits_before = pg_commits(database)
    try:
        for index, child in enumerate(names):
            argv = ["-m", "procrastinate", "--log-level", "warning"]
            argv += ["--app", "bench.procrastinate_app.app", "worker"]
            argv += ["-q", queue, "-c", str(slots), "-n", f"bench{index}"]
            children.python(child, argv, env)
        _wait_jobs(dsn, queue, tasks, timeout_s, children)
    finally:
        children.stop(names)
    time.sleep(0.5)  # and so have the workers'
    commits = pg_commits(database) - commits_before
    completed, first, last = _events(dsn, queue)
    return PeerResult(
        "procrastinate", workers, tasks, completed, last - first, stored=completed, commits=commits
    )


def libpq_url(url: str) -> str:
    """The libpq form (``postgresql://...``) of a SQLAlchemy PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _wait_jobs(dsn: str, queue: str, tasks: int, timeout_s: float, children: Children) -> None:
    query = (
        "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s "
        "AND status IN ('succeeded', 'failed', 'aborted')"
    )
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(query, (queue,)).fetchone()
            if row is not None and int(row[0]) >= tasks:
                return
            if dead := children.dead():
                msg = f"procrastinate worker(s) {dead} exited; logs in {children.folder}"
                raise RuntimeError(msg)
            time.sleep(0.2)


def _events(dsn: str, queue: str) -> tuple[int, float, float]:
    """Succeeded jobs of ``queue`` and their first and last ``succeeded`` event (epoch s)."""
    query = (
        "SELECT count(*), extract(epoch FROM min(e.at)), extract(epoch FROM max(e.at)) "
        "FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id "
        "WHERE j.queue_name = %s AND e.type = 'succeeded'"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, (queue,)).fetchone()
    if row is None or not row[0]:
        return 0, 0.0, 0.0
    return int(row[0]), float(row[1]), float(row[2])


def _fill(children: Children, kind: str, tasks: int, env: dict[str, str], queue: str) -> None:
    name = f"{queue}-fill"
    proc = children.python(name, ["-m", "bench.peers", "fill", kind, str(tasks)], env)
    code = proc.wait(300)
    children.stop([name])
    if code != 0:
        msg = f"filling the {kind} queue failed (exit {code}); see {children.folder}/{name}.log"
        raise RuntimeError(msg)


def _span(times: list[float]) -> float:
    return times[-1] - times[0] if len(times) > 1 else 0.0


def _stored(catalog_url: str) -> int:
    engine = sa.create_engine(catalog_url)
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
            return int(conn.execute(query).scalar_one())
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


def _fill_main(kind: str, tasks: int) -> None:
    """Publish ``tasks`` no-op messages to the peer's queue (run as a child)."""
    if kind == "procrastinate":
        asyncio.run(_fill_procrastinate(tasks))
        return
    if kind == "celery":
        from bench.celery_app import app, noop  # noqa: PLC0415  # reads the environment

        if app.conf.result_backend:
            app.backend.ResultSession().close()  # creates its tables before 4 workers race
        with app.producer_or_acquire() as producer:
            for _ in range(tasks):
                noop.apply_async(producer=producer)
        return
    from bench.dramatiq_app import broker  # noqa: PLC0415
    from bench.dramatiq_app import noop as actor  # noqa: PLC0415

    for _ in range(tasks):
        actor.send()
    broker.close()


async def _fill_procrastinate(tasks: int) -> None:
    from bench.procrastinate_app import app, noop  # noqa: PLC0415  # reads the environment

    async with app.open_async():
        try:
            await app.check_connection_async()
            applied = await app.connector.execute_query_one_async(
                "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present"
            )
            if not applied["present"]:
                await app.schema_manager.apply_schema_async()
        except Exception as exc:
            msg = f"procrastinate schema: {exc}"
            raise SystemExit(msg) from exc
        for start in range(0, tasks, 1000):
            await noop.batch_defer_async(*({} for _ in range(min(1000, tasks - start))))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "fill":
        _fill_main(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(
            f"usage: python -m bench.peers fill celery|dramatiq|procrastinate N ({sys.argv[1:]})"
        )
