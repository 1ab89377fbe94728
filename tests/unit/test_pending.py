"""dispatcher.pending.explain: the sentence --wait prints while an execution stays pending,
one per reason the dispatcher has to pass it over, each with what to do."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatcher.catalog.records import PendingFacts, WorkerAgentRow
from dispatcher.pending import age, explain
from schemas.states import ExecutionStatus, TaskState

NOW = datetime(2026, 12, 9, 12, 0, tzinfo=UTC)


def worker(worker_id: str = "w1", **fields: Any) -> WorkerAgentRow:
    """An enabled, online, accepting, idle worker; ``fields`` change that."""
    values: dict[str, Any] = {
        "worker_agent_id": worker_id,
        "is_enabled": True,
        "display_name": "",
        "description": "",
        "machine_name": "",
        "tags": "",
        "user_account": "",
        "last_online_time": NOW - timedelta(seconds=2),
        "is_online": True,
        "running_tasks": 0,
        "max_task_count": 4,
    }
    return WorkerAgentRow(**(values | fields))


def facts(*candidates: WorkerAgentRow, **fields: Any) -> PendingFacts:
    values: dict[str, Any] = {
        "execution_id": 42,
        "status": ExecutionStatus.PENDING,
        "task_state": TaskState.PENDING,
        "attempt": 0,
        "holder": None,
        "use_any_worker": True,
        "candidates": candidates,
        "now": NOW,
        "master_last_seen": NOW - timedelta(seconds=5),
        "master_heartbeat_interval_s": 30.0,
    }
    return PendingFacts(**(values | fields))


OFFLINE = {"is_online": False, "last_online_time": NOW - timedelta(minutes=3)}


@pytest.mark.parametrize(
    ("given", "sentence"),
    [
        (facts(worker(), status=ExecutionStatus.RUNNING), ""),
        (facts(worker()), ""),
        (facts(), "no worker is registered: `scaleout workers add ID --enable`"),
        (
            facts(worker(is_enabled=False)),
            "no worker is enabled (w1 is disabled): `scaleout workers enable w1`",
        ),
        (
            facts(worker("w9", is_enabled=False), use_any_worker=False),
            "its worker is not enabled (w9 is disabled): `scaleout workers enable w9`",
        ),
        (
            facts(worker("w9", is_online=False, last_online_time=None), use_any_worker=False),
            "its worker is not online (w9 never seen): start `scaleout worker --id w9`",
        ),
        (
            facts(worker("a", **OFFLINE), worker("b", **OFFLINE), use_any_worker=False),
            "none of its workers is online (a last seen 3 min ago; b last seen 3 min ago): "
            "start `scaleout worker --id a`",
        ),
        (
            facts(worker(**OFFLINE)),
            "no enabled worker is online (w1 last seen 3 min ago): start `scaleout worker --id w1`",
        ),
        (
            facts(worker(running_tasks=4)),
            "every eligible worker is busy (w1 runs 4/4); it starts when a task ends",
        ),
        (facts(worker(running_tasks=4, task_backlog=2)), ""),
        (
            facts(worker(running_tasks=6, task_backlog=2)),
            "every eligible worker is busy (w1 runs 6/4 + a backlog of 2); it starts when a "
            "task ends",
        ),
        (
            facts(worker(accepting=False, not_accepting="free disk 80 MB < 500 MB")),
            "no eligible worker is accepting tasks (w1 is not accepting tasks: free disk "
            "80 MB < 500 MB)",
        ),
        (
            facts(worker("a", running_tasks=4), worker("b", accepting=False)),
            "no eligible worker has a free slot (a runs 4/4; b is not accepting tasks)",
        ),
        (
            facts(worker(), pending_ahead=3),
            "3 pending executions are ahead of it; the master dispatches the oldest first",
        ),
        (
            facts(worker(), task_state=TaskState.DISPATCHED, holder="w1", attempt=1),
            "dispatched to w1 (attempt 1); waiting for it to start",
        ),
        (
            facts(worker(is_enabled=False), master_last_seen=None),
            "no master has run on this catalog: start `scaleout master`; no worker is "
            "enabled (w1 is disabled): `scaleout workers enable w1`",
        ),
        (
            facts(worker(), master_last_seen=NOW - timedelta(minutes=5)),
            "the master is not running (last seen 5 min ago): start `scaleout master`",
        ),
    ],
)
def test_each_reason_is_one_sentence_with_what_to_do(given: PendingFacts, sentence: str) -> None:
    assert explain(given) == sentence


def test_a_worker_whose_messages_are_refused_is_named_with_the_refusal() -> None:
    """Refused since it was last seen: its heartbeats are refused, which is why it looks
    offline. Refused before it was last seen: it is only offline."""
    refused = worker(
        "acc-1",
        is_online=False,
        last_online_time=None,
        last_refusal_reason="forged_sender",
        last_refusal_detail="agent.heartbeat: body says acc-1, broker says guest",
        last_refusal_time=NOW - timedelta(seconds=12),
    )
    old = replace(
        refused,
        last_online_time=NOW - timedelta(minutes=3),
        last_refusal_time=NOW - timedelta(minutes=5),
    )

    assert explain(facts(refused)) == (
        "the master refuses acc-1's messages (forged_sender: agent.heartbeat: body says "
        "acc-1, broker says guest, 12 s ago): it must log in to RabbitMQ as acc-1; see "
        "`scaleout workers show acc-1`"
    )
    assert explain(facts(old)).startswith("no enabled worker is online (acc-1 last seen 3 min")


def test_without_ages_the_sentence_stays_the_same_while_the_reason_does() -> None:
    earlier = facts(worker(**OFFLINE))
    later = replace(
        earlier, now=NOW + timedelta(minutes=10), master_last_seen=NOW + timedelta(minutes=10)
    )

    assert explain(earlier, ages=False) == explain(later, ages=False)
    assert explain(earlier, ages=False) == (
        "no enabled worker is online (w1 offline): start `scaleout worker --id w1`"
    )
    assert explain(earlier) != explain(later)


def test_long_lists_are_cut_to_three_names() -> None:
    disabled = [worker(f"w{n}", is_enabled=False) for n in range(5)]

    assert explain(facts(*disabled)) == (
        "no worker is enabled (w0, w1, w2 and 2 more are disabled): `scaleout workers enable w0`"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 s"), (119, "119 s"), (120, "2 min"), (7200, "2 h")]
)
def test_age(seconds: float, text: str) -> None:
    assert age(seconds) == text


def test_a_stale_report_does_not_explain_an_offline_worker() -> None:
    stale = worker(
        is_online=False,
        last_online_time=NOW - timedelta(minutes=3),
        last_refusal_reason="stale",
        last_refusal_time=NOW - timedelta(seconds=5),
    )

    assert explain(facts(stale)).startswith("no enabled worker is online (w1 last seen 3 min")
