"""Hostile input on the master's consumers: the status and heartbeat reconcilers get
arbitrary bytes and arbitrary valid-looking envelopes, on a real SQLite catalog. No
exception escapes, every delivery gets a verdict, and the catalog changes only through a
valid report from the worker that holds the attempt (for a heartbeat: the sender's own
row). The catalog is read before and after through its API."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from consumers.master.heartbeat import HeartbeatHandler
from consumers.master.identity import SenderCheck
from consumers.master.status import StatusHandler
from dispatcher.broker import Delivery, Disposition
from dispatcher.broker.topology import HEARTBEAT_EXCHANGE, STATUS_EXCHANGE
from dispatcher.catalog import Catalog
from dispatcher.catalog.records import (
    CancelOrder,
    HeartbeatResult,
    ReportOutcome,
    ReportResult,
)
from schemas.messages import AgentHeartbeat, StatusReport, TaskStarted
from tests.fixtures.catalog import deploy_sample, online_worker

HOLDER = "w1"
USERS = (HOLDER, "w2", "mallory", "scaleout-master", None)
STATUS_TYPES = ("task.started", "task.progress", "task.log", "task.finished")
OTHER_TYPES = ("agent.heartbeat", "task.assign", "project.fetch", "dispatch.wake", "nope")


@dataclass
class World:
    """A catalog with one task running on w1 (attempt 1 of 2) and one pending."""

    catalog: Catalog
    task_id: uuid.UUID
    execution_id: int
    pending_id: int


@dataclass
class RecordingSink:
    """The real catalog behind the reconcilers' own seams, keeping what it answered."""

    catalog: Catalog
    reports: list[tuple[StatusReport, str, ReportResult]] = field(default_factory=list)
    heartbeats: list[tuple[AgentHeartbeat, str, HeartbeatResult]] = field(default_factory=list)

    def apply_status_reports(
        self, reports: Sequence[tuple[StatusReport, str]]
    ) -> list[ReportResult]:
        results = self.catalog.apply_status_reports(reports)
        self.reports.extend((r, s, res) for (r, s), res in zip(reports, results, strict=True))
        return results

    def record_heartbeats(
        self, beats: Sequence[tuple[AgentHeartbeat, str]]
    ) -> list[HeartbeatResult]:
        results = self.catalog.record_heartbeats(beats)
        self.heartbeats.extend((h, s, r) for (h, s), r in zip(beats, results, strict=True))
        return results


@dataclass
class Replies:
    cancels: list[CancelOrder] = field(default_factory=list)

    def cancel(self, orders: Sequence[CancelOrder]) -> list[bool]:
        self.cancels.extend(orders)
        return [True] * len(orders)

    def ensure_worker(self, worker_id: str) -> None:
        """Queues are the broker's business; nothing to do on a catalog-only test."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'ssisdb.sqlite3'}"
    catalog = Catalog.open(url, worker_offline_after_s=1e6, initial_lease_s=1e5)
    catalog.init()
    online_worker(catalog, HOLDER, lease_interval_s=86400)
    online_worker(catalog, "w2", lease_interval_s=86400)
    catalog.disable_worker_agent("w2")
    deploy_sample(catalog)
    execution_id = catalog.create_execution("Finance", "Sales", "Load")
    catalog.start_execution(execution_id, retry_count=1)
    [assignment] = catalog.claim_tasks(10)
    assert assignment.worker_id == HOLDER
    started = TaskStarted(
        task_id=assignment.task_id,
        attempt=assignment.attempt,
        execution_id=execution_id,
        worker_id=HOLDER,
    )
    [result] = catalog.apply_status_reports([(started, HOLDER)])
    assert result.outcome is ReportOutcome.APPLIED
    catalog.disable_worker_agent(HOLDER)  # the next execution stays pending
    pending_id = catalog.create_execution("Finance", "Sales", "Load")
    catalog.start_execution(pending_id)
    catalog.enable_worker_agent(HOLDER)
    yield World(catalog, assignment.task_id, execution_id, pending_id)
    catalog.close()


def snapshot(catalog: Catalog, skip_worker: str | None = None) -> Any:
    """What an operator sees: executions, their messages, the workers (all but
    ``skip_worker``, whose own heartbeat may legitimately refresh its row)."""
    executions = catalog.list_executions(limit=100)
    messages = {e.execution_id: catalog.execution_messages(e.execution_id) for e in executions}
    workers = [
        replace(w, is_online=True)
        for w in catalog.list_worker_agents()
        if w.worker_agent_id != skip_worker
    ]
    return executions, messages, workers


def delivery(body: bytes, user_id: str | None, exchange: str) -> Delivery:
    return Delivery(
        body=body,
        exchange=exchange,
        routing_key="fuzz",
        user_id=user_id,
        message_id=str(uuid.uuid4()),
        redelivered=False,
        delivery_tag=1,
        headers={},
    )


# -- strategies -------------------------------------------------------------------------------

WORKER_IDS = st.sampled_from([HOLDER, HOLDER, "w2", "mallory", "w9", "", "../etc", "w1 "])
ATTEMPTS = st.one_of(st.sampled_from([1, 2, 0, -1]), st.integers(), st.text(max_size=3))
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def envelopes(draw: st.DrawFn, world: World, types: Sequence[str]) -> dict[str, Any]:
    """A JSON object that looks like one of our messages. Half are valid messages whose
    identity fields (task, attempt, execution, worker) vary; the other half also get wrong
    values, a missing field or an extra one."""
    if draw(st.booleans()):
        return draw(_valid_envelopes(world, types))
    body = draw(_valid_envelopes(world, types))
    body.update(
        schema_version=draw(st.sampled_from([1, 2, 0, "1"])),
        sent_at=draw(st.sampled_from(["yesterday", datetime.now(UTC).isoformat()[:19]])),
        attempt=draw(ATTEMPTS),
        outcome=draw(st.sampled_from(["succeeded", "exploded"])),
        exit_code=draw(st.one_of(st.none(), st.integers(-(2**70), 2**70))),
        percent=draw(st.one_of(st.none(), st.floats(-10, 200))),
        lease_interval_s=draw(st.sampled_from([2.0, 0, -1, 1e9])),
        max_task_count=draw(st.integers(-1, 20)),
    )
    keep = draw(st.sets(st.sampled_from(sorted(body)), min_size=len(body) - 3))
    body = {k: v for k, v in body.items() if k in keep or k == "type"}
    if draw(st.booleans()):
        body[draw(st.text(min_size=1, max_size=8))] = draw(JSONISH)
    return body


@st.composite
def _valid_envelopes(draw: st.DrawFn, world: World, types: Sequence[str]) -> dict[str, Any]:
    kind = draw(st.sampled_from(types))
    task_id = draw(st.sampled_from([str(world.task_id), str(world.task_id), str(uuid.uuid4())]))
    attempt = draw(st.sampled_from([1, 1, 2, 3]))
    now = datetime.now(UTC).isoformat()
    body: dict[str, Any] = {
        "type": kind,
        "schema_version": 1,
        "message_id": str(uuid.uuid4()),
        "sent_at": now,
        "worker_id": draw(WORKER_IDS),
    }
    about = {
        "task_id": task_id,
        "attempt": attempt,
        "execution_id": draw(st.sampled_from([world.execution_id, world.pending_id, 0])),
    }
    if kind == "agent.heartbeat":
        body["running"] = [about] * draw(st.integers(0, 2))
        body["lease_interval_s"] = draw(st.sampled_from([2.0, 60.0, 86400.0]))
        body["max_task_count"] = draw(st.integers(0, 20))
        body["machine_name"] = draw(st.text(max_size=10))
        return body
    body.update(about)
    if kind == "task.finished":
        body["outcome"] = draw(st.sampled_from(["succeeded", "failed", "canceled"]))
        body["error"] = draw(st.text(max_size=30))
    elif kind == "task.progress":
        body["percent"] = draw(st.floats(0, 100))
    elif kind == "task.log":
        seq = draw(st.integers(0, 3))
        body["entries"] = [{"seq": seq, "time": now, "message": draw(st.text(max_size=20))}]
    elif kind == "task.started":
        body["machine_name"] = draw(st.text(max_size=10))
    return body


def users_for(body: dict[str, Any]) -> st.SearchStrategy[str | None]:
    """The AMQP user_id: often the worker the body names (what RabbitMQ lets that worker
    stamp), else anyone."""
    claimed = body.get("worker_id")
    named = st.just(claimed) if isinstance(claimed, str) else st.none()
    return st.one_of(named, st.sampled_from(USERS))


def encoded(body: dict[str, Any]) -> bytes:
    return json.dumps(body, default=str).encode()


def authorized_status(world: World, body: dict[str, Any], user_id: str | None) -> bool:
    """The holder reporting about its own current attempt: the one report that may
    change the catalog."""
    return (
        user_id == HOLDER
        and body.get("worker_id") == HOLDER
        and body.get("task_id") == str(world.task_id)
        and body.get("attempt") in (1, True, 1.0)
    )


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- status -----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), raw=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_status_reconciler_survives_any_bytes(
    world: World, data: st.DataObject, raw: list[bytes]
) -> None:
    """Arbitrary bytes on the status queue are dead-lettered or dropped, never raise, and
    change nothing in the catalog."""
    users = [data.draw(st.sampled_from(USERS)) for _ in raw]
    before = snapshot(world.catalog)
    sink = RecordingSink(world.catalog)
    reconciler = StatusHandler(sink, senders=SenderCheck())
    verdicts = reconciler(
        [delivery(b, u, STATUS_EXCHANGE) for b, u in zip(raw, users, strict=True)]
    )
    assert len(verdicts) == len(raw)
    assert all(r.outcome is not ReportOutcome.APPLIED for _, _, r in sink.reports)
    assert snapshot(world.catalog) == before


@FUZZ
@given(data=st.data())
def test_status_reconciler_applies_only_authorized_reports(
    world: World, data: st.DataObject
) -> None:
    """Valid-looking status envelopes from anyone but the attempt's holder (wrong user,
    forged worker_id, other task or attempt) never change the catalog; bad ones are
    dead-lettered, refused ones acked and counted."""
    count = data.draw(st.integers(1, 4))
    batch = []
    for _ in range(count):
        body = data.draw(envelopes(world, STATUS_TYPES + OTHER_TYPES[:2]))
        user = data.draw(users_for(body))
        assume(not authorized_status(world, body, user))
        batch.append(delivery(encoded(body), user, STATUS_EXCHANGE))
    before = snapshot(world.catalog)
    sink = RecordingSink(world.catalog)
    verdicts = StatusHandler(sink, senders=SenderCheck())(batch)
    event(f"reports that reached the catalog: {min(len(sink.reports), 2)}")
    assert [v.disposition in {Disposition.ACK, Disposition.DEAD_LETTER} for v in verdicts] == [
        True
    ] * count
    for report, sender, result in sink.reports:
        assert sender == report.worker_id
        assert result.outcome is not ReportOutcome.APPLIED, (report, sender, result)
    assert snapshot(world.catalog) == before


def test_an_authorized_report_does_change_the_snapshot(tmp_path: Path) -> None:
    """The snapshot sees a real change: the holder's progress and log are applied and its
    log line appears (so the fuzz tests' 'unchanged' means something)."""
    url = f"sqlite:///{tmp_path / 'ssisdb.sqlite3'}"
    catalog = Catalog.open(url, worker_offline_after_s=1e6, initial_lease_s=1e5)
    catalog.init()
    try:
        online_worker(catalog, HOLDER)
        deploy_sample(catalog)
        execution_id = catalog.create_execution("Finance", "Sales", "Load")
        catalog.start_execution(execution_id)
        [assignment] = catalog.claim_tasks(1)
        before = snapshot(catalog)
        now = datetime.now(UTC).isoformat()
        body = {
            "type": "task.log",
            "schema_version": 1,
            "message_id": str(uuid.uuid4()),
            "sent_at": now,
            "task_id": str(assignment.task_id),
            "attempt": assignment.attempt,
            "execution_id": execution_id,
            "worker_id": HOLDER,
            "entries": [{"seq": 0, "time": now, "message": "hello"}],
        }
        sink = RecordingSink(catalog)
        StatusHandler(sink, senders=SenderCheck())(
            [delivery(encoded(body), HOLDER, STATUS_EXCHANGE)]
        )
        assert [r.outcome for _, _, r in sink.reports] == [ReportOutcome.APPLIED]
        assert snapshot(catalog) != before
    finally:
        catalog.close()


# -- heartbeats -------------------------------------------------------------------------------


@FUZZ
@given(raw=st.binary(max_size=400), user=st.sampled_from(USERS))
def test_heartbeat_reconciler_survives_any_bytes(
    world: World, raw: bytes, user: str | None
) -> None:
    """Arbitrary bytes on the heartbeat queue are dead-lettered, never raise, and change
    nothing in the catalog."""
    before = snapshot(world.catalog)
    sink = RecordingSink(world.catalog)
    replies = Replies()
    verdicts = HeartbeatHandler(sink, replies, senders=SenderCheck())(
        [delivery(raw, user, HEARTBEAT_EXCHANGE)]
    )
    assert len(verdicts) == 1
    if not sink.heartbeats:
        assert verdicts[0].disposition is Disposition.DEAD_LETTER
        assert snapshot(world.catalog) == before


@FUZZ
@given(data=st.data())
def test_heartbeats_change_only_their_senders_own_row(world: World, data: st.DataObject) -> None:
    """A valid-looking heartbeat changes at most its verified sender's row; it renews a
    lease only for the worker holding the attempt; a forged one changes nothing."""
    body = data.draw(envelopes(world, ("agent.heartbeat", "agent.heartbeat", "task.started")))
    user = data.draw(users_for(body))
    before = snapshot(world.catalog, skip_worker=user)
    sink = RecordingSink(world.catalog)
    replies = Replies()
    [verdict] = HeartbeatHandler(sink, replies, senders=SenderCheck())(
        [delivery(encoded(body), user, HEARTBEAT_EXCHANGE)]
    )
    assert verdict.disposition in {Disposition.ACK, Disposition.DEAD_LETTER}
    event(f"heartbeat reached the catalog: {bool(sink.heartbeats)}")
    for heartbeat, sender, result in sink.heartbeats:
        assert sender == heartbeat.worker_id == user
        # Only the holder's entries for its own current attempt may renew (an entry listed
        # twice renews the same lease twice: harmless).
        own = [r for r in heartbeat.running if (r.task_id, r.attempt) == (world.task_id, 1)]
        assert result.renewed <= (len(own) if sender == HOLDER else 0), (heartbeat, result)
        for order in result.cancels:
            assert order.worker_id == sender
    if not sink.heartbeats:
        assert verdict.disposition is Disposition.DEAD_LETTER
    assert snapshot(world.catalog, skip_worker=user) == before
