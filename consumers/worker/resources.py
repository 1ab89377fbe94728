"""The machine's load as the worker weighs it: CPU % and free memory (psutil).

SSIS's worker asks for no task while CPU is above ``TaskRequestMaxCPU`` or free memory is
below ``TaskRequestMinMemory``; the heartbeat reports the same figures.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Load:
    cpu_percent: float
    free_memory_mb: float


class LoadMonitor:
    """Samples the load at most once per ``min_interval_s``; safe from any thread.

    ``psutil.cpu_percent(interval=None)`` measures since its previous call, process-wide:
    one shared sampler keeps that window meaningful when several threads ask.
    """

    def __init__(self, *, max_cpu: float, min_memory_mb: float, min_interval_s: float = 1.0):
        self._max_cpu = max_cpu
        self._min_memory_mb = min_memory_mb
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last: Load | None = None
        self._taken = 0.0
        psutil.cpu_percent(interval=None)  # the first call only starts the window

    def sample(self) -> Load:
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._taken >= self._min_interval_s:
                self._last = Load(
                    cpu_percent=float(psutil.cpu_percent(interval=None)),
                    free_memory_mb=psutil.virtual_memory().available / _MIB,
                )
                self._taken = now
            return self._last

    def accepting(self, load: Load | None = None) -> bool:
        """Whether the load allows taking another task."""
        load = load or self.sample()
        return load.cpu_percent <= self._max_cpu and load.free_memory_mb >= self._min_memory_mb
