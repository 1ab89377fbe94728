"""The mark every package carries in its environment, and the processes that carry one.

``SCALEOUT_PACKAGE_OWNER=<worker id>:<TasksRootFolder>#<task_id>/<attempt>``: which
worker started the package, and for which attempt. It is inherited by whatever the
package spawns (unless that clears its environment), including a daemon that left the
package's process group and session, so it finds those where a ``killpg`` cannot: when
an attempt is stopped, when its package ended but something still holds its pipes, and
at the start of a worker whose previous life left processes running
(``consumers/worker/orphans.py``). It is read from the live process, so it cannot name a
recycled pid.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from uuid import UUID

import psutil

OWNER_ENV = "SCALEOUT_PACKAGE_OWNER"


def attempt_mark(owner: str, task_id: UUID, attempt: int) -> str:
    """The mark of one attempt's processes; ``owner`` is the worker's part."""
    return f"{owner}#{task_id}/{attempt}"


def owner_of(mark: str) -> str:
    """The worker's part of a mark."""
    return mark.partition("#")[0]


def marked(wanted: Callable[[str], bool]) -> list[psutil.Process]:
    """Live processes (not this one) whose mark ``wanted`` accepts. Reads every process's
    environment: about 2 ms per hundred processes, so only on rare paths."""
    me = os.getpid()
    found = []
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            value = process.environ().get(OWNER_ENV)
        except (psutil.Error, OSError):  # gone meanwhile, or not ours to read
            continue
        if value is not None and wanted(value):
            found.append(process)
    return found


def send(processes: list[psutil.Process], sig: signal.Signals) -> None:
    for process in processes:
        try:
            process.send_signal(sig)  # psutil checks the pid is still that process
        except psutil.Error:
            continue


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
