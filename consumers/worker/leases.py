"""What this worker knows of its attempts' leases, on its own monotonic clock.

The master keeps each lease (``tasks.expires_at``) on the database's clock and expires it
when no renewal came in time; it may then give the task to another worker. The worker
never reads that clock. It keeps instead, per running attempt, a deadline before which
the master's lease cannot have ended, made only of what it saw itself:

- the assignment: ``received + (lease_expires_at - sent_at)``. Both times come from the
  master, so the worker's wall clock never enters (a skew between the master's host and
  its database shifts the estimate; the next fact bounds it);
- its ``task.started``, once the broker confirmed it: the master sets the lease to its
  now + LeaseInterval when it applies the report, which is after the worker sent it, and
  it applies every confirmed report before it judges any lease (its read horizon,
  protocol.md 9.2) or answers it with a ``task.refused``. So the deadline becomes
  ``sent + LeaseInterval``, shorter or longer than the dispatch lease;
- every heartbeat the broker confirmed that listed the attempt: the master renews the
  lease to its now + the beat's ``lease_interval_s`` when it reads the beat, so the
  deadline becomes at least ``sent + lease_interval_s``. A beat that failed, or is still
  waiting for its confirm, extends nothing.

"Sent" is when the worker began to send: a publish that retried through a broker restart
counts from its first try, which only makes the deadline earlier. An attempt whose
deadline passed ``margin_s`` ago is *lost*: :meth:`Leases.lost` names it once and
:class:`LeaseWatch` has it stopped. The margin (one ``TaskHeartbeatInterval``) lets a beat
that is late, not lost, still count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from schemas.messages import AgentHeartbeat
from schemas.states import AttemptKey

Clock = Callable[[], float]

_WATCH_POLL_MAX_S = 1.0


@dataclass(frozen=True, slots=True)
class LostLease:
    """An attempt whose lease may have ended at the master; times are monotonic."""

    key: AttemptKey
    deadline: float
    last_renewal: float
    """When the last confirmed renewal (the started report or a heartbeat) was sent."""


@dataclass(slots=True)
class _Lease:
    deadline: float
    last_renewal: float
    lost: bool = False


class Leases:
    """The deadlines of the running attempts; safe to share between threads."""

    def __init__(self, lease_interval_s: float, margin_s: float, clock: Clock = time.monotonic):
        self._lease_s = lease_interval_s
        self.margin_s = margin_s
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[AttemptKey, _Lease] = {}

    def hold(self, key: AttemptKey, started_sent_at: float) -> None:
        """The attempt's ``task.started`` (sent at ``started_sent_at``) was confirmed and
        its package starts: the master renewed its lease when it applied that report, so
        the lease runs from then (the assignment's own lease no longer counts)."""
        deadline = started_sent_at + self._lease_s
        with self._lock:
            self._leases[key] = _Lease(deadline, started_sent_at)

    def renewed(self, keys: Iterable[AttemptKey], sent_at: float, lease_s: float) -> None:
        """A heartbeat sent at ``sent_at``, advertising ``lease_s`` and listing ``keys``,
        was confirmed by the broker."""
        until = sent_at + lease_s
        with self._lock:
            for key in keys:
                lease = self._leases.get(key)
                if lease is None or lease.lost or until <= lease.deadline:
                    continue
                lease.deadline, lease.last_renewal = until, sent_at

    def beat_confirmed(self, beat: AgentHeartbeat, sent_at: float) -> None:
        """:class:`~consumers.worker.heartbeat.Heartbeat`'s ``on_confirmed``."""
        keys = ((r.task_id, r.attempt) for r in beat.running)
        self.renewed(keys, sent_at, beat.lease_interval_s)

    def forget(self, key: AttemptKey) -> None:
        """The attempt ended (its package is gone)."""
        with self._lock:
            self._leases.pop(key, None)

    def deadline(self, key: AttemptKey) -> float | None:
        with self._lock:
            lease = self._leases.get(key)
            return None if lease is None else lease.deadline

    def lost(self) -> list[LostLease]:
        """The attempts whose deadline passed ``margin_s`` ago, each named once."""
        now = self._clock()
        found = []
        with self._lock:
            for key, lease in self._leases.items():
                if not lease.lost and now >= lease.deadline + self.margin_s:
                    lease.lost = True
                    found.append(LostLease(key, lease.deadline, lease.last_renewal))
        return found

    def next_check_in(self) -> float:
        """Seconds until the earliest deadline (plus margin) of a lease not lost yet."""
        with self._lock:
            due = [d.deadline + self.margin_s for d in self._leases.values() if not d.lost]
        return max(0.0, min(due) - self._clock()) if due else float("inf")


class LeaseWatch:
    """The loop that stops what :meth:`Leases.lost` names; a thread of its own, since the
    heartbeat thread may sit in a publish that retries for its whole reconnect budget."""

    def __init__(self, leases: Leases, on_lost: Callable[[LostLease], None]) -> None:
        self._leases = leases
        self._on_lost = on_lost

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for lost in self._leases.lost():
                self._on_lost(lost)
            stop.wait(min(_WATCH_POLL_MAX_S, self._leases.next_check_in()))
