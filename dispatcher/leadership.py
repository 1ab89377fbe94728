"""The leadership loop: which of several masters on one catalog does the master's work.

Every master runs this loop; it renews or tries to take the catalog's leader lease every
third of ``leader_lease_s`` (dispatcher/catalog/leadership.py has the lease and its
fencing epoch). A master that takes the lease begins a term: it fences its catalog
handle with the new epoch and starts the work loops (dispatch, the consumers, the
timers). A master whose renewal fails, because another took the lease, ends its term:
the work loops stop, and the fenced handle has refused their writes since the takeover
(NotLeader). A clean stop releases the lease, so a standby takes over at its next try.

Standbys run only this loop and their heartbeat in ``masters``: active/passive, as SSIS
runs its master as a failover-cluster role. Why not several active masters: the expiry
sweep must judge leases only on what it has read (dispatcher/horizon.py), which needs
one reader of the heartbeat and status queues; and one writer keeps the catalog's
transitions in one place. A takeover is one lease plus one try at most.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from dispatcher import metrics
from dispatcher.errors import CatalogError

logger = logging.getLogger(__name__)

_EVENTS = {"deposed": "leadership.deposed", "released": "leadership.released"}


class LeaseCatalog(Protocol):
    def acquire_leadership(self, master_id: str, lease_s: float) -> int | None: ...

    def renew_leadership(self, master_id: str, epoch: int, lease_s: float) -> bool: ...

    def release_leadership(self, master_id: str, epoch: int) -> None: ...

    def fence(self, master_id: str, epoch: int | None) -> None: ...


class Leadership:
    """One master's side of the lease. ``on_elected(epoch)`` starts a term's work;
    ``on_deposed()`` ends it and returns when its loops have stopped."""

    def __init__(
        self,
        catalog: LeaseCatalog,
        master_id: str,
        lease_s: float,
        *,
        on_elected: Callable[[int], None],
        on_deposed: Callable[[], None],
    ) -> None:
        self._catalog = catalog
        self.master_id = master_id
        self._lease_s = lease_s
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self.epoch: int | None = None
        self.nudge = threading.Event()
        """Set to try or renew now rather than at the next third of the lease."""
        catalog.fence(master_id, None)  # nothing is written as the leader before a term

    @property
    def is_leader(self) -> bool:
        return self.epoch is not None

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()
            self.nudge.wait(self._lease_s / 3)
            self.nudge.clear()

    def step(self) -> None:
        """One try (a standby) or renewal (the leader); a catalog outage waits."""
        try:
            if self.epoch is None:
                self._try()
            elif not self._catalog.renew_leadership(self.master_id, self.epoch, self._lease_s):
                self._depose("deposed")
        except CatalogError as exc:
            # A leader that cannot renew keeps its term: its writes fail with the catalog
            # anyway, and on the catalog's return it renews or finds itself deposed.
            logger.warning("leadership.catalog_unavailable", extra={"error": str(exc)})

    def _try(self) -> None:
        epoch = self._catalog.acquire_leadership(self.master_id, self._lease_s)
        if epoch is None:
            return
        self.epoch = epoch
        self._catalog.fence(self.master_id, epoch)
        metrics.MASTER_IS_LEADER.set(1)
        metrics.MASTER_EPOCH.set(epoch)
        metrics.LEADERSHIP_CHANGES.labels(change="elected").inc()
        logger.info("leadership.elected", extra={"master_id": self.master_id, "epoch": epoch})
        self._on_elected(epoch)

    def _depose(self, change: str) -> None:
        epoch, self.epoch = self.epoch, None
        self._catalog.fence(self.master_id, None)
        metrics.MASTER_IS_LEADER.set(0)
        metrics.MASTER_EPOCH.set(0)
        metrics.LEADERSHIP_CHANGES.labels(change=change).inc()
        logger.warning(
            _EVENTS[change],
            extra={"master_id": self.master_id, "epoch": epoch, "hint": "now a standby"},
        )
        self._on_deposed()

    def release(self) -> None:
        """End the term (if any) and give the lease up; for a clean stop."""
        epoch = self.epoch
        if epoch is None:
            return
        self._depose("released")
        try:
            self._catalog.release_leadership(self.master_id, epoch)
        except CatalogError as exc:
            logger.warning("leadership.release_failed", extra={"error": str(exc)})
