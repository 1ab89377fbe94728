"""``runner_mode = "inprocess"``: a callable package run in a thread of the worker.

Only for the dispatcher benchmark, where a process start per task would hide what is being
measured. The price: no output capture, no isolation, and no way to kill the package (a
cancel is reported at once; the thread runs on to its end).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

from schemas.messages import ParameterScalar
from schemas.project import CallableEntry

from . import threads
from .runner import Line, Parameter


class ThreadPackage:
    """A callable package run in a thread of the worker (``runner_mode = "inprocess"``).

    For the dispatcher benchmark: no process start-up cost, but no output capture and no
    way to kill it; a cancel is reported, the thread runs on to its end.
    """

    _import_lock = threading.Lock()
    _loaded: ClassVar[dict[tuple[str, str], Callable[[dict[str, ParameterScalar]], object]]] = {}
    """Functions already imported, by (project root, entry). A root is one project version
    (the archive's content hash), so the same key always means the same code."""

    def __init__(self, entry: CallableEntry, root: Path, parameters: Mapping[str, Parameter]):
        self._entry = entry
        self._root = root
        self._values = {p.name: p.value for p in parameters.values()}
        self._result: int | None = None
        self._error = ""
        self._finished = threading.Event()
        self.pid: int | None = None

    def start(self) -> None:
        threads.SHARED.spawn(self._run, f"pkg-{self._entry.callable}")

    def _run(self) -> None:
        try:
            function = self._load()
            result = function(self._values)
            self._result = result if isinstance(result, int) and not isinstance(result, bool) else 0
        except Exception as exc:  # the package's failure is its outcome
            self._error = f"{type(exc).__name__}: {exc}"
            self._result = 1
        finally:
            self._finished.set()

    def _load(self) -> Callable[[dict[str, ParameterScalar]], object]:
        key = (str(self._root), self._entry.callable)
        with self._import_lock:
            function = self._loaded.get(key)
            if function is None:
                function = self._import()
                self._loaded[key] = function
        return function

    def _import(self) -> Callable[[dict[str, ParameterScalar]], object]:
        module_name, _, function_name = self._entry.callable.partition(":")
        before = set(sys.modules)
        sys.path.insert(0, str(self._root))
        try:
            module = importlib.import_module(module_name)
        finally:
            sys.path.remove(str(self._root))
            _forget_new_modules_under(before, self._root)
        function: Callable[[dict[str, ParameterScalar]], object] = getattr(module, function_name)
        return function

    def next_lines(self, timeout: float, limit: int) -> list[Line]:
        self._finished.wait(timeout)
        return []

    def done(self) -> bool:
        return self._finished.is_set()

    def returncode(self) -> int | None:
        return self._result

    def stop(self, grace_s: float) -> None:
        """A thread cannot be killed: the attempt counts as ended now (reported as
        canceled), and the thread is left to run out on its own."""
        self._finished.set()

    def error_summary(self) -> str:
        return self._error


def _forget_new_modules_under(before: set[str], root: Path) -> None:
    """Drop the project's modules from ``sys.modules``: another project (or version) may
    have modules of the same names. The function already loaded keeps its own.

    Only modules this import added are looked at: resolving every loaded module's path
    on each run cost ~30 ms per package (the benchmark's largest worker cost)."""
    prefix = os.path.join(os.path.realpath(root), "")
    for name in set(sys.modules) - before:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path and os.path.realpath(path).startswith(prefix):
            sys.modules.pop(name, None)
