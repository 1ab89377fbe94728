"""The registry's slots: MaxTaskCount, the load gate, cancels and shutdown while waiting."""

from __future__ import annotations

import threading
import uuid

from consumers.worker.tasks import Registry, SlotResult


def key() -> tuple[uuid.UUID, int]:
    return (uuid.uuid4(), 1)


def wait_in_thread(
    registry: Registry, k: tuple[uuid.UUID, int], stopping: threading.Event, accepting: bool = True
) -> list[SlotResult]:
    result: list[SlotResult] = []
    thread = threading.Thread(
        target=lambda: result.append(registry.wait_for_slot(k, lambda: accepting, stopping)),
        daemon=True,
    )
    thread.start()
    thread.join(timeout=1.0)
    return result


def test_slots_are_bounded_and_freed_by_release() -> None:
    """The third attempt waits while two hold slots, and gets one when an attempt ends."""
    registry, stopping = Registry(2), threading.Event()
    first, second, third = key(), key(), key()
    assert registry.wait_for_slot(first, lambda: True, stopping) is SlotResult.GRANTED
    assert registry.wait_for_slot(second, lambda: True, stopping) is SlotResult.GRANTED
    result: list[SlotResult] = []
    waiter = threading.Thread(
        target=lambda: result.append(registry.wait_for_slot(third, lambda: True, stopping))
    )
    waiter.start()
    waiter.join(timeout=0.7)
    assert result == []
    registry.release(first)
    waiter.join(timeout=5)
    assert result == [SlotResult.GRANTED]
    assert registry.seen(first)


def test_a_busy_machine_gets_no_slot() -> None:
    """While the load gate says no, a free slot is not granted."""
    assert wait_in_thread(Registry(5), key(), threading.Event(), accepting=False) == []


def test_a_cancel_or_a_shutdown_ends_the_wait() -> None:
    """A cancel for the waiting attempt, or the worker stopping, ends its wait."""
    registry, stopping = Registry(1), threading.Event()
    registry.wait_for_slot(key(), lambda: True, stopping)
    waiting = key()
    result: list[SlotResult] = []
    thread = threading.Thread(
        target=lambda: result.append(registry.wait_for_slot(waiting, lambda: True, stopping))
    )
    thread.start()
    while not registry.cancel_waiting(waiting):
        thread.join(timeout=0.01)
    thread.join(timeout=5)
    assert result == [SlotResult.CANCELED]
    stopping.set()
    assert wait_in_thread(registry, key(), stopping) == [SlotResult.STOPPING]
    assert not registry.cancel_waiting(key())
