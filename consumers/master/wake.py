"""Answers ``dispatch.wake``: a nudge that pending work exists, sent best-effort by
``executions start`` and ``workers enable``, so the dispatcher runs a pass at once
rather than at its next poll.

A wake carries no facts, only a hint: any body is accepted, because the worst a bogus
wake can do is cost one dispatch pass, and the queue holds at most one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dispatcher.broker import ACK, Delivery, Verdict


class WakeHandler:
    """The handler of the ``scaleout.master.wake`` consumer."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def __call__(self, deliveries: Sequence[Delivery]) -> list[Verdict]:
        self._wake()
        return [ACK] * len(deliveries)
