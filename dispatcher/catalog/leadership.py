"""Several masters: their rows, and the leader lease with its fencing epoch.

One row of ``master_lease`` says who leads, until when (the database's clock) and under
which ``epoch``. A master takes the lease only when it is free or lapsed, and every take
raises the epoch. Renewal keeps the epoch. Each transaction of the leader's work first
checks, under a shared row lock, that the lease still names it under its epoch
(:func:`check_fence`): a takeover's update waits for those transactions to end, and every
transaction after it sees the new epoch. So a leader that was paused and lost its lease
can never write on stale authority after it resumes: its first write raises NotLeader.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx, aware, to_db, utc
from dispatcher.catalog.records import LeaderLease, MasterInstance, MasterRole, MasterRow
from dispatcher.catalog.tables import Tables
from dispatcher.errors import NotLeader

LEASE_NAME = "leader"
ONLINE_BEATS = 3
"""A master is online while its last heartbeat is younger than this many intervals."""


def announce(tx: Tx, me: MasterInstance) -> None:
    """This master's row: inserted at its first heartbeat, updated at each."""
    m = tx.t.masters
    values: dict[str, Any] = {
        "machine_name": me.machine_name,
        "machine_ip": me.machine_ip,
        "metrics_port": me.metrics_port,
        "role": me.role.value,
        "epoch": me.epoch,
        "last_online_time": tx.now,
    }
    updated = tx.conn.execute(sa.update(m).where(m.c.master_id == me.master_id).values(values))
    if updated.rowcount == 0:
        tx.conn.execute(sa.insert(m).values(master_id=me.master_id, started_time=tx.now, **values))


def restarted(tx: Tx, master_id: str) -> None:
    """A master process starting under ``master_id``: its row's started_time is now."""
    m = tx.t.masters
    tx.conn.execute(sa.update(m).where(m.c.master_id == master_id).values(started_time=tx.now))


def _lease(tx: Tx, *, lock: str | None = None) -> Any:
    return tx.conn.execute(_lease_query(tx.t, lock)).one()


@cache
def _lease_query(t: Tables, lock: str | None) -> sa.Select[Any]:
    """Built once: the fence runs it in every write transaction of the leader."""
    lease = t.master_lease
    query = sa.select(lease).where(lease.c.lease_name == LEASE_NAME)
    if lock == "update":
        query = query.with_for_update().with_hint(lease, "WITH (UPDLOCK, ROWLOCK)", "mssql")
    elif lock == "share":
        query = query.with_for_update(read=True).with_hint(
            lease, "WITH (HOLDLOCK, ROWLOCK)", "mssql"
        )
    return query


def _lapsed(tx: Tx, expires_at: datetime | None) -> bool:
    return expires_at is None or utc(expires_at) <= utc(tx.now)


def acquire(tx: Tx, master_id: str, lease_s: float) -> int | None:
    """Take the lease if it is free, lapsed or already this master's; the new epoch, or
    None while another master holds it."""
    row = _lease(tx, lock="update")
    if row.holder not in (None, master_id) and not _lapsed(tx, row.expires_at):
        return None
    epoch = int(row.epoch) + 1
    lease = tx.t.master_lease
    tx.conn.execute(
        sa.update(lease)
        .where(lease.c.lease_name == LEASE_NAME, lease.c.epoch == row.epoch)
        .values(
            holder=master_id,
            epoch=epoch,
            expires_at=to_db(tx, tx.now + timedelta(seconds=lease_s)),
            acquired_at=tx.now,
        )
    )
    return epoch


def renew(tx: Tx, master_id: str, epoch: int, lease_s: float) -> bool:
    """Extend the lease this master holds under ``epoch``; False once it is another's.
    A lapsed lease nobody took is still this master's: nobody acted in between."""
    lease = tx.t.master_lease
    renewed = tx.conn.execute(
        sa.update(lease)
        .where(
            lease.c.lease_name == LEASE_NAME,
            lease.c.holder == master_id,
            lease.c.epoch == epoch,
        )
        .values(expires_at=to_db(tx, tx.now + timedelta(seconds=lease_s)))
    )
    return renewed.rowcount == 1


def release(tx: Tx, master_id: str, epoch: int) -> None:
    """Give the lease up (a clean stop), so a standby need not wait for it to lapse."""
    lease = tx.t.master_lease
    tx.conn.execute(
        sa.update(lease)
        .where(
            lease.c.lease_name == LEASE_NAME,
            lease.c.holder == master_id,
            lease.c.epoch == epoch,
        )
        .values(holder=None, expires_at=None)
    )


def check_fence(tx: Tx, master_id: str, epoch: int) -> None:
    """NotLeader unless the lease names ``master_id`` under ``epoch``; the shared lock
    holds a takeover back until this transaction ends."""
    row = _lease(tx, lock="share")
    if row.holder != master_id or int(row.epoch) != epoch:
        msg = (
            f"master {master_id} acted under epoch {epoch}, but the lease is "
            f"{row.holder or 'free'} under epoch {row.epoch}"
        )
        raise NotLeader(msg, hint="another master took over; this one steps down")


def leader_lease(tx: Tx) -> LeaderLease:
    row = _lease(tx)
    return LeaderLease(
        holder=row.holder,
        epoch=int(row.epoch),
        expires_at=aware(row.expires_at),
        acquired_at=aware(row.acquired_at),
        lapsed=_lapsed(tx, row.expires_at),
    )


def list_masters(tx: Tx, heartbeat_interval_s: float) -> list[MasterRow]:
    m = tx.t.masters
    lease = leader_lease(tx)
    online_after = utc(tx.now) - timedelta(seconds=ONLINE_BEATS * heartbeat_interval_s)
    rows = tx.conn.execute(sa.select(m).order_by(m.c.master_id)).all()
    return [
        MasterRow(
            master_id=row.master_id,
            machine_name=row.machine_name,
            machine_ip=row.machine_ip,
            metrics_port=row.metrics_port,
            role=MasterRole(row.role),
            epoch=row.epoch,
            started_time=utc(row.started_time),
            last_online_time=utc(row.last_online_time),
            is_online=utc(row.last_online_time) >= online_after,
            holds_lease=lease.holder == row.master_id and not lease.lapsed,
        )
        for row in rows
    ]
