"""Progress a package reports: the ``##scaleout[progress]`` line and its rate limit.

A package prints, on stdout (stderr works too), a line::

    ##scaleout[progress] 42.5 Loading rows

the marker, then a percent (0 to 100, a decimal number, an optional ``%``; ``-`` for
"unknown"), then an optional message. :func:`parse_progress` reads one line;
:class:`ProgressThrottle` turns any number of them into at most one ``task.progress`` per
interval per attempt: the latest value wins, and the one still waiting when the package
ends is sent before ``task.finished``. Lines that cannot be read and values that are
replaced before they are sent are counted (``scaleout_worker_progress_dropped_total``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher import metrics
from schemas.messages import PROGRESS_MESSAGE_MAX_CHARS

PROGRESS_MARKER = "##scaleout[progress]"
"""Chosen so no ordinary output starts with it (Azure DevOps' ``##vso[...]`` idea)."""
NO_PERCENT = "-"
_MARKED = re.compile(r"\s*" + re.escape(PROGRESS_MARKER))


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float | None
    message: str


class BadProgress(ValueError):
    """A progress line whose value cannot be sent; ``reason`` is the metric's label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_progress(text: str) -> Progress | None:
    """The progress a line reports; None for an ordinary line; :class:`BadProgress` for a
    marked line whose percent is not a number (``invalid``) or not in 0..100
    (``out_of_range``). An out-of-range value is refused, not clamped: showing 100 % for a
    package that printed 150 would hide its bug."""
    marked = _MARKED.match(text)  # every output line passes here: no copy of it first
    if marked is None:
        return None
    value, *rest = text[marked.end() :].split(None, 1) or [""]
    message = rest[0].strip()[:PROGRESS_MESSAGE_MAX_CHARS] if rest else ""
    if value in {"", NO_PERCENT}:
        if not message:
            raise BadProgress("invalid")  # a bare marker says nothing
        return Progress(None, message)
    try:
        percent = float(value.removesuffix("%"))
    except ValueError:
        raise BadProgress("invalid") from None
    if math.isnan(percent):
        raise BadProgress("invalid")
    if not 0.0 <= percent <= 100.0:
        raise BadProgress("out_of_range")
    return Progress(percent, message)


def count_dropped(reason: str, n: int = 1) -> None:
    metrics.WORKER_PROGRESS_DROPPED.labels(reason=reason).inc(n)


class ProgressThrottle:
    """At most one progress report per ``interval_s``; the newest value wins.

    The first value goes out at once; values arriving within the interval wait, each
    replacing the one before (counted ``superseded``); :meth:`due` releases the waiting
    one once the interval has passed, :meth:`final` releases it whatever the time (the
    package has ended and ``task.finished`` follows). One per attempt, one thread."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._sent_at: float | None = None
        self._pending: Progress | None = None

    def offer(self, progress: Progress) -> Progress | None:
        """``progress`` if it may be sent now, else None (it waits for :meth:`due`)."""
        if self._pending is not None:
            count_dropped("superseded")
        self._pending = progress
        return self.due()

    def due(self) -> Progress | None:
        """The waiting value, once the interval since the last one sent has passed."""
        now = self._clock()
        if self._pending is None:
            return None
        if self._sent_at is not None and now - self._sent_at < self._interval:
            return None
        return self._release(now)

    def final(self) -> Progress | None:
        """The waiting value, now: the last word before ``task.finished``."""
        return None if self._pending is None else self._release(self._clock())

    def _release(self, now: float) -> Progress:
        progress, self._pending = self._pending, None
        assert progress is not None
        self._sent_at = now
        return progress
