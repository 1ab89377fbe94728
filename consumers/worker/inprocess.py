"""``runner_mode = "inprocess"``: a callable package run in a thread of the worker.

Only for the dispatcher benchmark, where a process start per task would hide what is being
measured. The price: no isolation, and no way to kill the package (a cancel is reported at
once; the thread runs on to its end). What the package's own thread prints to stdout is
captured through a thread-routed ``sys.stdout`` (so progress lines work as in a process);
threads it starts itself, and stderr, are not captured.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TextIO, cast

from schemas.messages import ParameterScalar
from schemas.project import CallableEntry

from . import threads
from .runner import MAX_LINE_CHARS, Line, Parameter, make_line

_SINKS: dict[int, Callable[[str], None]] = {}
"""Thread ident -> the package whose prints it makes; read without the lock (a dict get)."""
_SINKS_LOCK = threading.Lock()


class _RoutedStdout:
    """The worker's ``sys.stdout`` once an in-process package runs: text written by a
    package's own thread goes to that package; any other thread's to the stream it replaced."""

    def __init__(self, real: TextIO) -> None:
        self._real = real

    def write(self, text: str) -> int:
        sink = _SINKS.get(threading.get_ident())
        if sink is None:
            return self._real.write(text)
        sink(text)
        return len(text)

    def flush(self) -> None:
        self._real.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, ...
        return getattr(self._real, name)


def _capture(sink: Callable[[str], None]) -> None:
    """Route this thread's stdout to ``sink`` (installing the router if something, such as
    a test runner, has replaced ``sys.stdout`` since)."""
    with _SINKS_LOCK:
        if not isinstance(sys.stdout, _RoutedStdout):
            sys.stdout = cast(TextIO, _RoutedStdout(sys.stdout))
        _SINKS[threading.get_ident()] = sink


def _release() -> None:
    with _SINKS_LOCK:
        _SINKS.pop(threading.get_ident(), None)


class ThreadPackage:
    """A callable package run in a thread of the worker (``runner_mode = "inprocess"``).

    For the dispatcher benchmark: no process start-up cost, but no way to kill it; a cancel
    is reported, the thread runs on to its end. Its thread's stdout lines are its output.
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
        self._lines: queue.Queue[Line | None] = queue.Queue(maxsize=2000)
        """Bounded like a pipe: a package printing faster than the worker sends waits."""
        self._partial = ""
        self.pid: int | None = None

    def start(self) -> None:
        threads.SHARED.spawn(self._run, f"pkg-{self._entry.callable}")

    def _run(self) -> None:
        _capture(self._write)
        try:
            function = self._load()
            result = function(self._values)
            self._result = result if isinstance(result, int) and not isinstance(result, bool) else 0
        except Exception as exc:  # the package's failure is its outcome
            self._error = f"{type(exc).__name__}: {exc}"
            self._result = 1
        finally:
            if self._partial:
                self._put(self._partial)
            _release()
            self._finished.set()
            self._wake()

    def _write(self, text: str) -> None:
        """What the package's thread prints, cut into lines (an endless one at 8192)."""
        *complete, self._partial = (self._partial + text).split("\n")
        for line in complete:
            self._put(line)
        while len(self._partial) > MAX_LINE_CHARS:
            line, self._partial = self._partial[:MAX_LINE_CHARS], self._partial[MAX_LINE_CHARS:]
            self._put(line)

    def _put(self, text: str) -> None:
        line = make_line("stdout", text.rstrip("\r"))
        while not self._finished.is_set():  # once stopped, nobody reads: drop
            with contextlib.suppress(queue.Full):
                self._lines.put(line, timeout=0.1)
                return

    def _wake(self) -> None:
        """Wake a ``next_lines`` waiting for the first line."""
        with contextlib.suppress(queue.Full):
            self._lines.put_nowait(None)

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
        """Up to ``limit`` lines, waiting at most ``timeout`` for the first."""
        lines: list[Line] = []
        try:
            item = self._lines.get(timeout=timeout)
            while True:
                if item is not None:
                    lines.append(item)
                if len(lines) >= limit:
                    break
                item = self._lines.get_nowait()
        except queue.Empty:
            pass
        return lines

    def done(self) -> bool:
        return self._finished.is_set() and self._lines.empty()

    def returncode(self) -> int | None:
        return self._result

    def stop(self, grace_s: float) -> None:
        """A thread cannot be killed: the attempt counts as ended now (reported as
        canceled), and the thread is left to run out on its own."""
        self._finished.set()
        self._wake()

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
