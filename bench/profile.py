"""Sampling profiles of the master and a worker during a throughput run (py-spy), folded
into the functions with the largest share of *busy* samples, for the note in RESULTS.md.

py-spy records every thread, idle ones included (``--idle``), and we decide what is idle:
py-spy's own idea of idle is the OS thread state, which reads a thread blocked in a C call
(an fsync inside SQLite's commit, ``SimpleQueue.get``, a lock) as running. A sample is a
*wait* when its innermost Python frame is a known blocking call, either a blocking
function of the standard library (``select``, ``wait``, ``sleep``, ...) or a line that
calls one (``self._inbox.get(timeout=...)``, ``dbapi_connection.commit()``, ...): the
line's source text is read from the file py-spy names. Waits are reported apart, by kind;
shares are of busy samples only.
"""

from __future__ import annotations

import linecache
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Profile:
    name: str
    samples: int
    """Busy samples (what the shares are of)."""
    total: int
    """All samples, waits included."""
    top_inclusive: list[tuple[str, float]]
    top_self: list[tuple[str, float]]
    waits: list[tuple[str, float]]
    """Wait kind -> share of all samples."""


def start(pid: int, out: Path, duration_s: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` (all threads, idle included) into ``out`` (folded stacks)."""
    py_spy = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    if not Path(py_spy).exists():
        return None
    argv = [py_spy, "record", "-p", str(pid), "-d", str(duration_s), "-r", "200", "--idle"]
    argv += ["--full-filenames"]  # the classifier reads the innermost frame's line
    argv += ["-f", "raw", "-o", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fold(name: str, path: Path, top: int = 12) -> Profile | None:
    """Shares of busy samples per function, inclusive and self, and the waits by kind."""
    if not path.exists():
        return None
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    busy = total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        count = int(count_text)
        total += count
        kind = wait_kind(frames[-1])
        if kind is not None:
            waits[kind] += count
            continue
        busy += count
        for frame in set(map(_short, frames)):
            inclusive[frame] += count
        own[_short(frames[-1])] += count
    if not busy:
        return None
    return Profile(
        name,
        busy,
        total,
        _shares(inclusive, busy, top),
        _shares(own, busy, top),
        _shares(waits, total, len(waits)),
    )


def _shares(counts: Counter[str], total: int, top: int) -> list[tuple[str, float]]:
    return [(frame, 100.0 * n / total) for frame, n in counts.most_common(top)]


_BLOCKING_FUNCTIONS = {
    # innermost frame (function, module file) -> kind
    ("select", "selectors.py"): "socket select/poll",
    ("poll", "selectors.py"): "socket select/poll",
    ("select", "select_connection.py"): "socket select/poll",
    ("poll", "select_connection.py"): "socket select/poll",
    ("wait", "threading.py"): "lock/condition wait",
    ("_wait_for_tstate_lock", "threading.py"): "thread join",
    ("get", "queue.py"): "queue get",
    ("_worker", "thread.py"): "queue get",  # concurrent.futures' idle pool thread
    ("accept", "socket.py"): "socket accept",
    ("recv", "socket.py"): "socket recv",
    ("recv_into", "socket.py"): "socket recv",
    ("sleep", "time.py"): "sleep",
    ("wait", "waiting.py"): "database round trip",  # psycopg waits on its socket
    ("wait_conn", "waiting.py"): "database round trip",
}

_SELECT = r"\b(select|epoll)\.(select|poll)\(|\.poll\(|selector\.select\("
_BLOCKING_LINES = (
    # a line that blocks in C; the innermost Python frame is its caller
    (re.compile(r"\.get\((\)|timeout|block|True)"), "queue get"),
    (re.compile(r"\.(wait|acquire|join)\("), "lock/condition wait"),
    (re.compile(_SELECT), "socket select/poll"),
    (re.compile(r"\btime\.sleep\(|\bsleep\("), "sleep"),
    (re.compile(r"\bos\.fsync\("), "fsync"),
    # the DBAPI commit: for SQLite (synchronous=FULL) the WAL fsync, for psycopg a round
    # trip that waits for the server's fsync
    (re.compile(r"dbapi_connection\.commit\(\)|\bconnection\.commit\(\)"), "commit (fsync)"),
)


def wait_kind(frame: str) -> str | None:
    """The kind of wait a py-spy frame ``function (path:line)`` is in, or None (busy)."""
    function, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, line_text = where.rpartition(":")
    kind = _BLOCKING_FUNCTIONS.get((function, path.rsplit("/", 1)[-1]))
    if kind is not None:
        return kind
    if function in {"sleep", "select", "poll", "epoll", "fsync"}:
        return function
    if not line_text.isdigit() or not path:
        return None
    source = linecache.getline(path, int(line_text))
    for pattern, name in _BLOCKING_LINES:
        if pattern.search(source):
            return name
    return None


def _short(frame: str) -> str:
    """'function (path/to/module.py:line)' -> 'module.function'."""
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(".py", 1)[0]
    return f"{module}.{name}"
