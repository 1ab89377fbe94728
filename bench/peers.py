"""The peers, on the same RabbitMQ (a queue of their own on the bench's vhost), the same
worker counts and the same number of tasks: Celery 5 (prefork, ``acks_late``, no result
backend), Celery 5 with a database result backend on the catalog's database and
``task_track_started``, and Dramatiq with its RabbitMQ broker.

Each run: the queue is filled first (enqueue excluded, as for scaleout), then the worker
processes start; throughput is (N - 1) / (last completion - first completion), which
leaves out the workers' start-up. ``python -m bench.peers fill celery|dramatiq N`` is the
filler, run as a child with the same environment as the workers.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import sqlalchemy as sa

from bench.infra import Children, Completions


@dataclass
class PeerResult:
    name: str
    workers: int
    tasks: int
    completed: int
    elapsed_s: float
    stored: int | None = None
    """Rows the result backend holds with status SUCCESS (the like-for-like peer)."""

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
            argv = ["-m", "celery", "-A", "bench.celery_app", "worker", "-P", "prefork", "-c", "1"]
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
    children: Children, broker_url: str, workers: int, tasks: int, *, timeout_s: float = 120.0
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
        children.python(child, argv, env)
        times = completions.wait(tasks, timeout_s)
    finally:
        children.stop([child])
        completions.close()
    return PeerResult("dramatiq", workers, tasks, len(times), _span(times))


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


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "fill":
        _fill_main(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"usage: python -m bench.peers fill celery|dramatiq N (not {sys.argv[1:]})")
