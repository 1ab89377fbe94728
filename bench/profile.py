"""Sampling profiles of the master and a worker during a throughput run (py-spy), folded
into the functions with the largest share of samples, for the note in RESULTS.md."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Profile:
    name: str
    samples: int
    top_inclusive: list[tuple[str, float]]
    top_self: list[tuple[str, float]]


def start(pid: int, out: Path, duration_s: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` (all threads, idle included) into ``out`` (folded stacks)."""
    py_spy = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    if not Path(py_spy).exists():
        return None
    argv = [py_spy, "record", "-p", str(pid), "-d", str(duration_s), "-r", "200"]
    argv += ["-f", "raw", "-o", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fold(name: str, path: Path, top: int = 12) -> Profile | None:
    """Shares of samples (of the busy ones: threads waiting in a select/poll/wait are
    left out) per function, inclusive and self."""
    if not path.exists():
        return None
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if _idle(frames[-1]):
            continue
        count = int(count_text)
        total += count
        for frame in set(map(_short, frames[1:])):
            inclusive[frame] += count
        own[_short(frames[-1])] += count
    if not total:
        return None
    return Profile(name, total, _shares(inclusive, total, top), _shares(own, total, top))


def _shares(counts: Counter[str], total: int, top: int) -> list[tuple[str, float]]:
    return [(frame, 100.0 * n / total) for frame, n in counts.most_common(top)]


_IDLE = (
    "wait (threading",
    "select (",
    "poll (",
    "_worker (concurrent",
    "sleep",
    "_wait_for_tstate_lock",
    "recv_into (",
    "accept (",
    "get (queue",
    "epoll",
    "wait (",
)


def _idle(frame: str) -> bool:
    return any(word in frame for word in _IDLE)


def _short(frame: str) -> str:
    """'function (path/to/module.py:line)' -> 'module.function'."""
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(".py", 1)[0]
    return f"{module}.{name}"
