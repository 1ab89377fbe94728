"""The leader lease and its fencing epoch, on SQLite and PostgreSQL (issue 15)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from dispatcher.catalog import Catalog
from dispatcher.catalog.engine import IDLE_IN_TRANSACTION_TIMEOUT_S, LOCK_TIMEOUT_S
from dispatcher.catalog.records import MasterInstance, MasterRole
from dispatcher.errors import NotLeader
from tests.fixtures.catalog import online_worker, started_execution, table_counts


@pytest.fixture
def two(catalog_url: str) -> Iterator[tuple[Catalog, Catalog]]:
    """Two masters' handles on one catalog."""
    a, b = Catalog.open(catalog_url), Catalog.open(catalog_url)
    yield a, b
    a.close()
    b.close()


def instance(master_id: str, role: MasterRole, epoch: int | None) -> MasterInstance:
    return MasterInstance(master_id, "host", "127.0.0.1", 9540, role, epoch)


def test_the_first_master_takes_the_lease_and_the_second_waits(
    two: tuple[Catalog, Catalog],
) -> None:
    a, b = two
    first = a.acquire_leadership("m-a", lease_s=30)
    second = b.acquire_leadership("m-b", lease_s=30)

    assert first == 1
    assert second is None
    assert a.renew_leadership("m-a", 1, lease_s=30)
    assert not b.renew_leadership("m-b", 1, lease_s=30)
    lease = b.leader_lease()
    assert (lease.holder, lease.epoch, lease.lapsed) == ("m-a", 1, False)


def test_a_lapsed_lease_is_taken_over_with_a_higher_epoch_and_fences_the_old_leader(
    two: tuple[Catalog, Catalog], catalog_url: str
) -> None:
    """The old leader's writes fail after the takeover and change nothing."""
    a, b = two
    online_worker(a, "w1")
    started_execution(a)
    epoch_a = a.acquire_leadership("m-a", lease_s=0.2)
    assert epoch_a is not None
    a.fence("m-a", epoch_a)
    time.sleep(0.5)  # the lease lapses: m-a was paused
    epoch_b = b.acquire_leadership("m-b", lease_s=30)
    assert epoch_b == epoch_a + 1
    b.fence("m-b", epoch_b)
    before = table_counts(catalog_url)

    with pytest.raises(NotLeader, match="the lease is m-b under epoch 2"):
        a.claim_tasks(10)
    assert not a.renew_leadership("m-a", epoch_a, lease_s=30)
    assert table_counts(catalog_url) == before
    [claimed] = b.claim_tasks(10)
    assert claimed.worker_id == "w1"


def test_a_lapsed_lease_nobody_took_is_still_renewable(two: tuple[Catalog, Catalog]) -> None:
    """Nobody acted in between, so the same epoch still fences correctly."""
    a, _ = two
    epoch = a.acquire_leadership("m-a", lease_s=0.2)
    time.sleep(0.4)

    assert epoch is not None
    assert a.renew_leadership("m-a", epoch, lease_s=30)
    assert a.leader_lease().epoch == epoch


def test_an_unfenced_handle_writes_freely_and_a_deposed_one_not_at_all(
    two: tuple[Catalog, Catalog],
) -> None:
    """The CLI's and API's handles are not fenced; a master's handle after its term is."""
    a, _ = two
    a.create_folder("Before")
    a.fence("m-a", None)
    with pytest.raises(NotLeader):
        a.create_folder("After")


def test_release_lets_a_standby_take_over_at_once(two: tuple[Catalog, Catalog]) -> None:
    a, b = two
    epoch = a.acquire_leadership("m-a", lease_s=300)
    assert epoch is not None
    a.release_leadership("m-a", epoch)

    assert b.acquire_leadership("m-b", lease_s=300) == epoch + 1


def test_a_takeover_waits_for_the_old_leaders_transaction_in_flight(
    two: tuple[Catalog, Catalog], catalog_url: str
) -> None:
    """The fence is checked under a shared lock: a takeover during one of the leader's
    transactions waits until it ends, so the two never write at once (PostgreSQL; SQLite
    serialises every writer anyway)."""
    a, b = two
    epoch = a.acquire_leadership("m-a", lease_s=0.2)
    assert epoch is not None
    a.fence("m-a", epoch)
    time.sleep(0.4)
    in_leader_tx, release = threading.Event(), threading.Event()
    order: list[str] = []

    def long_leader_write() -> None:
        with a._tx():  # the leader's work: fence checked, then a slow write
            in_leader_tx.set()
            release.wait(5)
            order.append("leader committed")

    writer = threading.Thread(target=long_leader_write)
    writer.start()
    assert in_leader_tx.wait(5)
    taker = threading.Thread(
        target=lambda: order.append(f"taken {b.acquire_leadership('m-b', lease_s=30)}")
    )
    taker.start()
    time.sleep(0.5)
    release.set()
    writer.join(10)
    taker.join(10)

    assert order == ["leader committed", f"taken {epoch + 1}"]


def test_masters_are_listed_with_their_role_epoch_and_whether_they_hold_the_lease(
    two: tuple[Catalog, Catalog],
) -> None:
    a, b = two
    epoch = a.acquire_leadership("m-a", lease_s=30)
    a.announce_master(instance("m-a", MasterRole.LEADER, epoch))
    b.announce_master(instance("m-b", MasterRole.STANDBY, None))
    b.announce_master(instance("m-b", MasterRole.STANDBY, None))  # an update, not a second row

    rows = a.list_masters(heartbeat_interval_s=30)

    assert [(r.master_id, r.role, r.epoch, r.holds_lease, r.is_online) for r in rows] == [
        ("m-a", MasterRole.LEADER, 1, True, True),
        ("m-b", MasterRole.STANDBY, None, False, True),
    ]


def test_a_paused_masters_open_transaction_cannot_hold_the_lease_forever(
    pg_catalog_url: str,
) -> None:
    """A master paused inside a transaction keeps its locks (the lease row's among them)
    until PostgreSQL ends the idle session, and one paused while it waited for a lock
    until that wait times out: our connections set both timeouts."""
    catalog = Catalog.open(pg_catalog_url)
    try:
        with catalog._tx() as tx:
            idle = tx.conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar()
            lock = tx.conn.exec_driver_sql("SHOW lock_timeout").scalar()
    finally:
        catalog.close()

    assert (idle, lock) == (f"{IDLE_IN_TRANSACTION_TIMEOUT_S}s", f"{LOCK_TIMEOUT_S}s")
