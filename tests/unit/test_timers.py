"""The expired-task sweep judges leases only while the master can hear heartbeats."""

from __future__ import annotations

from dispatcher.timers import HeartbeatWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_not_ready_while_deaf() -> None:
    """With the heartbeat consumer down, no lease may be judged."""
    watch = HeartbeatWatch(lambda: None, grace_s=5, clock=Clock())

    assert not watch.ready()


def test_ready_only_after_grace() -> None:
    """After (re)connecting, the sweep waits the grace window, then runs."""
    clock = Clock()
    since: list[float | None] = [clock.now]
    watch = HeartbeatWatch(lambda: since[0], grace_s=5, clock=clock)

    clock.now += 4.9
    assert not watch.ready()
    clock.now += 0.2
    assert watch.ready()

    since[0] = None  # the broker went away
    assert not watch.ready()
    since[0] = clock.now  # and came back: a fresh window
    assert not watch.ready()
