"""The worker's reusable daemon threads: jobs run at once, in parallel, on reused threads."""

from __future__ import annotations

import threading

from consumers.worker.threads import DaemonThreads


def test_jobs_run_in_parallel_and_threads_are_reused() -> None:
    """Two jobs that wait for each other both run (two threads); later jobs reuse them."""
    pool = DaemonThreads()
    barrier = threading.Barrier(2, timeout=5)
    idents: list[int] = []
    done = threading.Semaphore(0)

    def job() -> None:
        barrier.wait()
        idents.append(threading.get_ident())
        done.release()

    pool.spawn(job, "a")
    pool.spawn(job, "b")
    assert done.acquire(timeout=5)
    assert done.acquire(timeout=5)
    first = set(idents)
    assert len(first) == 2
    for name in ("c", "d"):
        pool.spawn(job, name)
    assert done.acquire(timeout=5)
    assert done.acquire(timeout=5)

    assert set(idents[2:]) <= first


def test_a_failing_job_leaves_its_thread_serving() -> None:
    """A job that raises is logged; its thread takes the next job."""
    pool = DaemonThreads()
    idents: list[int] = []
    ran = threading.Event()

    def boom() -> None:
        idents.append(threading.get_ident())
        raise RuntimeError("package bug")

    def after() -> None:
        idents.append(threading.get_ident())
        ran.set()

    pool.spawn(boom, "boom")
    for _ in range(500):  # until the failed job's thread is idle again
        if pool._idle:
            break
        threading.Event().wait(0.01)
    pool.spawn(after, "next")

    assert ran.wait(5)
    assert idents[0] == idents[1]
