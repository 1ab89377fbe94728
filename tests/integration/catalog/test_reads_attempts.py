"""execution_attempts: every attempt of an execution, who ran it and how it ended."""

from __future__ import annotations

import time

from dispatcher.catalog import Catalog
from schemas.messages import TaskOutcome
from tests.fixtures.catalog import finished, online_worker, started, started_execution


def test_attempts_record_each_try(catalog: Catalog) -> None:
    """A failed then succeeded execution shows two attempts with workers and outcomes."""
    online_worker(catalog, "w1")
    execution_id = started_execution(catalog, retry_count=1)
    assert catalog.execution_attempts(execution_id) == []

    first = catalog.claim_tasks(1)[0]
    catalog.apply_status_reports([(started(first), "w1")])
    catalog.apply_status_reports([(finished(first, TaskOutcome.FAILED), "w1")])
    second = catalog.claim_tasks(1)[0]
    catalog.apply_status_reports([(started(second), "w1")])
    catalog.apply_status_reports([(finished(second, TaskOutcome.SUCCEEDED), "w1")])

    attempts = catalog.execution_attempts(execution_id)
    assert [a.attempt for a in attempts] == [1, 2]
    assert [a.worker_agent_id for a in attempts] == ["w1", "w1"]
    assert all(a.started_at is not None and a.ended_at is not None for a in attempts)
    assert attempts[0].started_at <= attempts[1].dispatched_at  # type: ignore[operator]
    assert [a.outcome for a in attempts] == ["failed", "succeeded"]


def test_a_worker_whose_lease_lapsed_gets_nothing_until_it_speaks(
    catalog: Catalog, catalog_url: str
) -> None:
    """The requeued task of a silent worker goes elsewhere, not back to it, even while
    the worker still counts as online; its next heartbeat makes it eligible again."""
    short = Catalog.open(catalog_url, initial_lease_s=0.2)
    online_worker(short, "w1")
    execution_id = started_execution(short, retry_count=1)
    first = short.claim_tasks(1)[0]
    assert first.worker_id == "w1"
    time.sleep(0.4)

    expired = short.expire_leases()
    assert [e.execution_id for e in expired] == [execution_id]
    assert short.claim_tasks(1) == []  # w1 is online but silent since its lease lapsed
    online_worker(short, "w2")
    assert short.claim_tasks(1)[0].worker_id == "w2"
    short.close()
