"""The machine's load as the worker weighs it: CPU %, free memory and free disk (psutil).

SSIS's worker asks for no task while CPU is above ``TaskRequestMaxCPU`` or free memory is
below ``TaskRequestMinMemory``; this one also while the filesystem of ``TasksRootFolder``
has less free space than ``TaskRequestMinDiskSpace`` (a full disk fails every attempt). The
heartbeat reports the same figures and, while the worker refuses, why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from dispatcher import metrics

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Load:
    cpu_percent: float
    free_memory_mb: float
    free_disk_mb: float | None = None
    """None: not measured (no folder given, or the filesystem could not be asked)."""


class LoadMonitor:
    """Samples the load at most once per ``min_interval_s``; safe from any thread.

    ``psutil.cpu_percent(interval=None)`` measures since its previous call, process-wide:
    one shared sampler keeps that window meaningful when several threads ask.
    """

    def __init__(
        self,
        *,
        max_cpu: float,
        min_memory_mb: float,
        min_disk_mb: float = 0.0,
        disk_path: Path | None = None,
        min_interval_s: float = 1.0,
        also_refuse: Callable[[], str] | None = None,
    ):
        self._also_refuse = also_refuse or (lambda: "")
        """Another part's reason to take no task ("" = none): the reporter's, while its
        report cache cannot be written."""
        self._max_cpu = max_cpu
        self._min_memory_mb = min_memory_mb
        self._min_disk_mb = min_disk_mb
        self._disk_path = disk_path
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last: Load | None = None
        self._taken = 0.0
        self._refusing = ""
        self._disk_unknown = False
        """The reason last given for refusing; "" while accepting. Logged on change of
        state only, so a worker that stays refusing logs once."""
        psutil.cpu_percent(interval=None)  # the first call only starts the window

    def sample(self) -> Load:
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._taken >= self._min_interval_s:
                self._last = Load(
                    cpu_percent=float(psutil.cpu_percent(interval=None)),
                    free_memory_mb=psutil.virtual_memory().available / _MIB,
                    free_disk_mb=self._free_disk_mb(),
                )
                self._taken = now
            return self._last

    def accepting(self, load: Load | None = None) -> bool:
        """Whether the load allows taking another task."""
        return not self.refusal(load)

    def refusal(self, load: Load | None = None) -> str:
        """Why the load allows no new task (e.g. ``"free disk 80 MB < 500 MB"``); "" when
        it allows one. Logs ``worker.not_accepting`` when refusing starts and
        ``worker.accepting`` when it ends."""
        load = load or self.sample()
        reasons = []
        if load.cpu_percent > self._max_cpu:
            reasons.append(f"cpu {load.cpu_percent:.0f}% > {self._max_cpu:g}%")
        if load.free_memory_mb < self._min_memory_mb:
            reasons.append(f"free memory {load.free_memory_mb:.0f} MB < {self._min_memory_mb:g} MB")
        if load.free_disk_mb is not None and load.free_disk_mb < self._min_disk_mb:
            reasons.append(f"free disk {load.free_disk_mb:.0f} MB < {self._min_disk_mb:g} MB")
        if other := self._also_refuse():
            reasons.append(other)
        reason = "; ".join(reasons)
        self._note(reason)
        return reason

    def _note(self, reason: str) -> None:
        with self._lock:
            was, self._refusing = self._refusing, reason
        if reason and not was:
            logger.warning(
                "worker.not_accepting: %s; no new task until the load is back within limits",
                reason,
                extra={"reason": reason},
            )
        elif was and not reason:
            logger.info("worker.accepting: load back within limits (was: %s)", was)

    def _free_disk_mb(self) -> float | None:
        """Free MB of the filesystem that holds ``disk_path`` (or its nearest existing
        parent: the folder may not exist yet). Called under the lock."""
        if self._disk_path is None:
            return None
        path = self._disk_path
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            free = psutil.disk_usage(str(path)).free
        except OSError as exc:
            if not self._disk_unknown:  # once, not at every sample
                logger.warning("worker.disk_usage_failed: %s: %s; not gated", path, exc)
            self._disk_unknown = True
            return None
        self._disk_unknown = False
        metrics.WORKER_FREE_DISK_BYTES.set(free)
        return free / _MIB
