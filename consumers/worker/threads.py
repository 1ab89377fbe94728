"""Daemon threads that are kept and reused: starting an attempt hands its loop to an idle
thread (a queue put) instead of starting a thread, which waits until the new thread has
been scheduled. Daemon, like the threads they replace, so a package that never returns
cannot keep the worker process from exiting."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

Job = tuple[Callable[[], object], str]


class DaemonThreads:
    """Runs each submitted callable on an idle thread of the pool, or on a new one.

    Idle threads stay for the life of the process: there are never more than the peak
    number of callables running at once (MaxTaskCount, plus packages left running after
    a cancel), and without an idle timeout a submit can never race a thread that leaves.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def spawn(self, target: Callable[[], object], name: str) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread is, or is about to be, waiting for a job
                self._jobs.put((target, name))
                return
        threading.Thread(target=self._serve, args=((target, name),), daemon=True).start()

    def _serve(self, job: Job) -> None:
        while True:
            target, name = job
            threading.current_thread().name = name
            try:
                target()
            except BaseException:  # the callables report their own failures; keep serving
                logger.exception("threads.job_failed: %s", name)
            threading.current_thread().name = "idle"
            with self._lock:
                self._idle += 1
            job = self._jobs.get()


SHARED = DaemonThreads()
"""The worker's pool: attempts' loops and in-process packages."""
