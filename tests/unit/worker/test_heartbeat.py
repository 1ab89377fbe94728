"""The heartbeat loop's pace and its error tolerance, against :mod:`dispatcher.testing`'s
publisher."""

from __future__ import annotations

import threading
import time
import uuid

from consumers.worker.heartbeat import RETRY_AFTER_FAILURE_S, Heartbeat
from dispatcher.broker.topology import HEARTBEAT_EXCHANGE, HEARTBEAT_ROUTING_KEY
from dispatcher.errors import BrokerUnavailable
from dispatcher.testing import FakePublisher
from schemas.messages import AgentHeartbeat, RunningAttempt

RUNNING = (RunningAttempt(task_id=uuid.uuid4(), attempt=1, execution_id=1),)


def run_for(heartbeat: Heartbeat, seconds: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=heartbeat.run, args=(stop,))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(timeout=5)


def test_the_task_interval_applies_while_packages_run() -> None:
    """With attempts running, beats come every task interval, not every agent interval."""
    publisher = FakePublisher()
    beat = AgentHeartbeat(worker_id="w1", running=RUNNING)
    heartbeat = Heartbeat(
        lambda: publisher,
        lambda: beat,
        agent_interval_s=60,
        task_interval_s=0.1,
        error_tolerance_s=60,
        on_tolerance_exceeded=lambda: None,
    )
    run_for(heartbeat, 1.0)
    assert len(publisher.published) >= 5
    assert {(p.exchange, p.routing_key) for p in publisher.published} == {
        (HEARTBEAT_EXCHANGE, HEARTBEAT_ROUTING_KEY)
    }


def test_failing_heartbeats_past_the_tolerance_stop_the_packages() -> None:
    """When heartbeats fail for HeartbeatErrorTolerance while packages run, the callback
    that kills them is called."""
    publisher = FakePublisher()
    publisher.fail_next(None, BrokerUnavailable("down"))
    killed = threading.Event()
    heartbeat = Heartbeat(
        lambda: publisher,
        lambda: AgentHeartbeat(worker_id="w1", running=RUNNING),
        agent_interval_s=60,
        task_interval_s=0.05,
        error_tolerance_s=0.3,
        on_tolerance_exceeded=killed.set,
    )
    run_for(heartbeat, 0.8)
    assert killed.is_set()


def test_failures_without_running_packages_kill_nothing() -> None:
    """With nothing running, failing heartbeats never call the kill callback."""
    publisher = FakePublisher()
    publisher.fail_next(None, BrokerUnavailable("down"))
    killed = threading.Event()
    heartbeat = Heartbeat(
        lambda: publisher,
        lambda: AgentHeartbeat(worker_id="w1"),
        agent_interval_s=0.05,
        task_interval_s=0.05,
        error_tolerance_s=0.1,
        on_tolerance_exceeded=killed.set,
    )
    run_for(heartbeat, 0.5)
    assert not killed.is_set()


def test_a_failed_beat_is_tried_again_within_seconds_not_a_whole_interval() -> None:
    """An idle worker (AgentHeartbeatInterval 60 s) whose first beat is refused (no
    heartbeat queue yet: its master is still starting) beats again after
    RETRY_AFTER_FAILURE_S, and then keeps the 60 s pace once a beat got through."""
    publisher = FakePublisher()
    publisher.fail_next(1)
    heartbeat = Heartbeat(
        lambda: publisher,
        lambda: AgentHeartbeat(worker_id="w1"),
        agent_interval_s=60,
        task_interval_s=10,
        error_tolerance_s=600,
        on_tolerance_exceeded=lambda: None,
    )
    run_for(heartbeat, RETRY_AFTER_FAILURE_S + 5)
    assert len(publisher.published) == 1  # the retry, and nothing more for 60 s
