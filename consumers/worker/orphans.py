"""What a worker's previous life left running: found at start and stopped before any task.

A package dies with its worker on Linux (the parent-death signal, ``runner.py``), but only
the package's own process: what it spawned lives on after a ``kill -9`` of the worker,
and so does a package whose worker died in the instant before the signal was set (with
``setpriv``) or on a system without the signal. Every package, and everything it spawns
that keeps its environment, carries the worker's mark (``marks.py``). At start, before it
takes a task, the worker scans the processes for its own mark, sends each match and its
process group SIGTERM, SIGKILL after ``kill_grace_s``, and logs ``worker.orphan_stopped``
for each (counted in ``scaleout_worker_orphans_stopped_total``).

Why a mark in the environment rather than a file of pids: nothing is written per package
(the bookkeeping costs the start of a package nothing, and there is no durability to
reason about), it finds descendants that left the package's process group or session (a
daemon that double-forked), and it cannot name a recycled pid: the mark is read from the
live process itself. The folder is in the mark because several workers of one id may run
on one machine (tests, or one per folder), and each must stop only its own leftovers. A
process that cleared its environment is not found; a supervisor's cgroup (systemd's
``KillMode=control-group``, a container) is the bound for those.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

import psutil

from dispatcher import metrics

from . import marks
from .runner import kill_group

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Orphan:
    process: psutil.Process
    pgid: int | None
    name: str
    cwd: str


def find_orphans(owner: str) -> list[Orphan]:
    """Live processes (not this one) marked by the worker ``owner`` (any attempt)."""
    found = []
    for process in marks.marked(lambda mark: marks.owner_of(mark) == owner):
        try:
            found.append(Orphan(process, _pgid(process.pid), process.name(), process.cwd()))
        except (psutil.Error, OSError):  # gone meanwhile
            continue
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def stop_orphans(owner: str, grace_s: float) -> int:
    """Stop every process the worker ``owner`` marked: SIGTERM to it and its group,
    SIGKILL to what is left after ``grace_s``. How many were found."""
    orphans = find_orphans(owner)
    if not orphans:
        return 0
    own_group = os.getpgrp()
    groups = {o.pgid for o in orphans if o.pgid is not None and o.pgid != own_group}
    for orphan in orphans:
        logger.warning(
            "worker.orphan_stopped: pid %d (%s) in %s was left running by this worker's "
            "previous run; stopping it",
            orphan.process.pid,
            orphan.name,
            orphan.cwd,
            extra={"pid": orphan.process.pid, "pgid": orphan.pgid, "cwd": orphan.cwd},
        )
    processes = [o.process for o in orphans]
    _signal(processes, groups, signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    # The groups' members without the mark get no second chance either.
    _signal(alive, groups, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5.0)
    metrics.WORKER_ORPHANS_STOPPED.inc(len(orphans))
    return len(orphans)


def _signal(processes: list[psutil.Process], groups: set[int], sig: signal.Signals) -> None:
    marks.send(processes, sig)
    for pgid in groups:
        kill_group(pgid, sig)
