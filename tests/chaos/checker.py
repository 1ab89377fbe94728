"""The chaos run's checker: the catalog's outcome against the packages' own records.

Inputs: every execution the run started (read through the Catalog API), the records the
packages of ``examples/chaos`` appended to ``records.jsonl`` (``begin``, ``effect``,
``fail``, ``poison``; each with task_id, attempt, worker, execution, time), the faults the
nemesis injected (who, what, when) and the master's counters.

Figures (one line, :meth:`Verdict.line`):

- ``lost``: executions not in a terminal status once the cluster has settled.
- ``duplicated_effect``: executions with two or more ``effect`` records of which at least
  one is not allowed (below).
- ``wrong_status``: executions whose catalog outcome disagrees with the records: succeeded
  without an effect from the succeeded attempt (task, attempt and worker as the catalog
  has them), an effect that belongs to another execution, or a lone effect that is not
  allowed while the catalog says the work was not done (failed, ended unexpectedly).
- ``stale_fenced``: status reports the master refused as stale (its counter, summed over
  the master's lives); ``requeued``: attempts it returned to pending (same).
- ``orphaned_runs``: attempts that a worker killed with ``kill -9`` was running and that
  still wrote a record (``effect``, ``fail``) more than ``ORPHAN_MARGIN_S`` after the kill:
  packages that outlived their worker (:func:`orphaned_runs`).
- ``max_recovery_s``: for each worker killed with ``kill -9``, the time from the kill to
  the first ``begin`` of a later attempt of a task it was running. The nemesis restarts a
  killed worker after 3 s (a supervisor's restart), and the master may give the requeued
  attempt back to it (the dead worker still looks online: see test_outages.py), so the
  later attempt runs elsewhere or on the restarted worker.
- ``<fault>_s`` (e.g. ``master_paused_s``, ``catalog_restarted_s``): for each kind of
  fault, the longest time from the nemesis undoing it to the first package begun after
  (on that worker, for a worker fault): how long the cluster took to work again.

What "allowed" means. The DESIGN promises that two attempts of one task never both
report success, and the catalog enforces it with fenced writes; a package, though, is its
own process, and what it did before its worker went silent cannot be undone. So per
execution exactly one effect is *acknowledged*: the one of the attempt the catalog
records as succeeded. Every other effect is a *zombie* effect, and it is allowed only
when a fault could have cut its attempt off from the master: its worker was killed,
stopped or cut off, or the master or the broker was down (until the master's status
consumer and the workers' report and heartbeat connections were back), at some moment
between the attempt's ``begin`` and the effect plus one lease, one sweep and a margin (the
time its report had to reach the master). A zombie effect with no such fault means the master
gave away, or the worker ran twice, an attempt that was healthy: counted in
``duplicated_effect`` (or ``wrong_status`` when it is the only effect). The packages are
honest: they do not look for cancels; they record what they did.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.catalog.records import ExecutionRow
from schemas.states import ExecutionStatus


@dataclass(frozen=True, slots=True)
class Record:
    kind: str
    t: float
    task_id: str
    attempt: int
    worker: str
    execution: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.attempt)


@dataclass(frozen=True, slots=True)
class Fault:
    """A nemesis action: ``worker`` None means every worker (master or broker down)."""

    kind: str
    start: float
    end: float
    worker: str | None = None

    def hits(self, worker: str, start: float, end: float) -> bool:
        return (self.worker is None or self.worker == worker) and (
            start <= self.end and self.start <= end
        )


@dataclass(frozen=True, slots=True)
class Kill:
    worker: str
    at: float


@dataclass(frozen=True, slots=True)
class Undone:
    """When the nemesis undid a fault: a worker fault's worker back, the master resumed,
    the broker or the catalog up again. Recovery runs from here to the first package begun
    after it (on that worker, for a worker fault): the cluster doing work again. Unlike a
    :class:`Fault` it excuses nothing: a master pause must not cost any execution."""

    kind: str
    at: float
    worker: str | None = None


ORPHAN_MARGIN_S = 1.0
"""A record this soon after a kill may have been written before the package's SIGKILL
(the parent-death signal) took effect, on a loaded machine."""


@dataclass
class Verdict:
    executions: int = 0
    lost: int = 0
    duplicated_effect: int = 0
    wrong_status: int = 0
    orphaned_runs: int = 0
    stale_fenced: int = 0
    requeued: int = 0
    max_recovery_s: float = 0.0
    recoveries: list[float] = field(default_factory=list)
    fault_recovery_s: dict[str, float] = field(default_factory=dict)
    """Per fault kind, the longest time from its undoing to work begun again."""
    zombie_effects: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"executions={self.executions} lost={self.lost} "
            f"duplicated_effect={self.duplicated_effect} wrong_status={self.wrong_status} "
            f"orphaned_runs={self.orphaned_runs} "
            f"stale_fenced={self.stale_fenced} requeued={self.requeued} "
            f"max_recovery_s={self.max_recovery_s:.1f}"
            + "".join(f" {k}_s={v:.1f}" for k, v in sorted(self.fault_recovery_s.items()))
        )

    def details(self) -> str:
        zombies = " ".join(f"{k}={v}" for k, v in sorted(self.zombie_effects.items()))
        statuses = " ".join(f"{k}={v}" for k, v in sorted(self.by_status.items()))
        recoveries = " ".join(f"{r:.1f}" for r in sorted(self.recoveries))
        return (
            f"statuses: {statuses}\nallowed zombie effects by fault: {zombies or 'none'}\n"
            f"recoveries_s: {recoveries or 'none'}"
        )


def read_records(path: Path) -> list[Record]:
    """The records of a run; a torn last line (a package killed mid-write) is skipped."""
    records: list[Record] = []
    if not path.exists():
        return records
    for raw in path.read_text().splitlines():
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            continue
        records.append(
            Record(
                kind=str(data["kind"]),
                t=float(data["t"]),
                task_id=str(data["task_id"]),
                attempt=int(data["attempt"]),
                worker=str(data["worker"]),
                execution=int(data["execution"]),
            )
        )
    return records


@dataclass(frozen=True)
class Checker:
    faults: Sequence[Fault]
    kills: Sequence[Kill]
    grace_s: float
    """How long after an effect its report may still be cut off: lease + sweep + margin."""
    undone: Sequence[Undone] = ()

    def check(
        self,
        executions: Iterable[ExecutionRow],
        records: Sequence[Record],
        *,
        stale_fenced: int = 0,
        requeued: int = 0,
    ) -> Verdict:
        verdict = Verdict(stale_fenced=stale_fenced, requeued=requeued)
        by_task: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            by_task[record.task_id].append(record)
        rows = list(executions)
        for row in rows:
            verdict.executions += 1
            verdict.by_status[row.status.label.replace(" ", "_")] += 1
            self._one(row, by_task.get(str(row.task_id), []), verdict)
        self._recovery(rows, records, verdict)
        self._fault_recovery(records, verdict)
        verdict.orphaned_runs = len(orphaned_runs(records, self.kills))
        return verdict

    # -- one execution ---------------------------------------------------------------------

    def _one(self, row: ExecutionRow, records: list[Record], verdict: Verdict) -> None:
        name = f"execution {row.execution_id} ({row.package_name}, task {row.task_id})"
        if not row.status.is_terminal:
            verdict.lost += 1
            verdict.problems.append(f"lost: {name} is {row.status.label}")
            return
        effects = [r for r in records if r.kind == "effect"]
        foreign = [r for r in effects if r.execution != row.execution_id]
        if foreign:
            verdict.wrong_status += 1
            verdict.problems.append(f"wrong_status: {name} has effects of {foreign}")
            return
        acknowledged = self._acknowledged(row, effects)
        if row.status is ExecutionStatus.SUCCEEDED and acknowledged is None:
            verdict.wrong_status += 1
            verdict.problems.append(
                f"wrong_status: {name} succeeded (attempt {row.attempt} on "
                f"{row.worker_agent_id}) but that attempt recorded no effect; records {records}"
            )
            return
        zombies = [r for r in effects if r is not acknowledged]
        unexcused = []
        for zombie in zombies:
            cause = self._excuse(zombie, records)
            if cause is None:
                unexcused.append(zombie)
            else:
                verdict.zombie_effects[cause] += 1
        if not unexcused:
            return
        if len(effects) >= 2:
            verdict.duplicated_effect += 1
            verdict.problems.append(
                f"duplicated_effect: {name} is {row.status.label}; effects not allowed "
                f"{unexcused}; all records {records}"
            )
        else:
            verdict.wrong_status += 1
            verdict.problems.append(
                f"wrong_status: {name} is {row.status.label} but its package completed "
                f"with no fault to explain it: {unexcused}"
            )

    @staticmethod
    def _acknowledged(row: ExecutionRow, effects: list[Record]) -> Record | None:
        if row.status is not ExecutionStatus.SUCCEEDED:
            return None
        for record in effects:
            if (record.task_id, record.attempt) == (str(row.task_id), row.attempt) and (
                record.worker == row.worker_agent_id
            ):
                return record
        return None

    def _excuse(self, effect: Record, records: list[Record]) -> str | None:
        """The fault that could have fenced ``effect``'s attempt, or None."""
        begins = [r.t for r in records if r.kind == "begin" and r.key == effect.key]
        start = min(begins, default=effect.t)
        end = effect.t + self.grace_s
        for fault in self.faults:
            if fault.hits(effect.worker, start, end):
                return fault.kind
        return None

    # -- recovery ---------------------------------------------------------------------------

    def _recovery(
        self, rows: list[ExecutionRow], records: Sequence[Record], verdict: Verdict
    ) -> None:
        anywhere = {str(r.task_id) for r in rows if r.useanyworker}
        by_task: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            by_task[record.task_id].append(record)
        for kill in self.kills:
            for key in _running_at(records, kill):
                if key[0] not in anywhere:
                    continue
                later = [
                    r.t
                    for r in by_task[key[0]]
                    if r.kind in {"begin", "poison"} and r.attempt > key[1]
                ]
                if later:
                    verdict.recoveries.append(min(later) - kill.at)
        verdict.max_recovery_s = max(verdict.recoveries, default=0.0)

    def _fault_recovery(self, records: Sequence[Record], verdict: Verdict) -> None:
        for undone in self.undone:
            begun = [
                r.t
                for r in records
                if r.kind == "begin"
                and r.t >= undone.at
                and (undone.worker is None or r.worker == undone.worker)
            ]
            if not begun:
                continue  # nothing was left to run: no recovery to measure
            took = min(begun) - undone.at
            verdict.fault_recovery_s[undone.kind] = max(
                took, verdict.fault_recovery_s.get(undone.kind, 0.0)
            )


def _running_at(records: Sequence[Record], kill: Kill) -> set[tuple[str, int]]:
    """Attempts ``kill.worker`` had begun and not ended when it was killed."""
    begun = {
        r.key for r in records if r.worker == kill.worker and r.kind == "begin" and r.t < kill.at
    }
    ended = {
        r.key
        for r in records
        if r.worker == kill.worker and r.kind in {"effect", "fail"} and r.t < kill.at
    }
    return begun - ended


def orphaned_runs(
    records: Sequence[Record], kills: Sequence[Kill], margin_s: float = ORPHAN_MARGIN_S
) -> set[tuple[str, int]]:
    """Attempts whose package outlived its worker: running on a worker when it was
    killed, and recording something (its effect, its failure) later than ``margin_s``
    after the kill. Only a process still alive can write a record."""
    orphaned: set[tuple[str, int]] = set()
    for kill in kills:
        running = _running_at(records, kill)
        orphaned |= {
            r.key
            for r in records
            if r.key in running
            and r.worker == kill.worker
            and r.kind in {"effect", "fail"}
            and r.t > kill.at + margin_s
        }
    return orphaned
