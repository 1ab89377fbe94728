"""Why an execution stays pending, as one sentence that says what to do.

:func:`explain` is pure: it reads a :class:`PendingFacts` (the catalog's
``pending_facts``) and mirrors the dispatcher's rule (section 6 of docs/design.md): a
task goes to an allowed worker that is enabled, online, accepting and below its
MaxTaskCount, oldest pending task first. ``scaleout executions create --wait`` prints the
sentence when it changes; ``ages=False`` leaves out the "12 s ago" parts that change
every second, so two sentences compare equal while the reason is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from dispatcher.catalog.records import PendingFacts, WorkerAgentRow
from schemas.states import ExecutionStatus, TaskState

MASTER_STALE_BEATS = 3
"""The master counts as not running after this many missed heartbeats."""
MASTER_STALE_MIN_S = 10.0
FORGED_SENDER = "forged_sender"
LISTED = 3
"""Workers named in one sentence; the rest are counted."""


def explain(facts: PendingFacts, *, ages: bool = True) -> str:
    """Why the execution waits, or '' when it is not pending or nothing holds it back (a
    worker is free: the master gives it the task at its next pass)."""
    if facts.status is not ExecutionStatus.PENDING:
        return ""
    if facts.task_state is TaskState.DISPATCHED:
        parts = [_master(facts, ages), _dispatched(facts)]
    else:
        parts = [_master(facts, ages), _workers(facts, ages) or _queue(facts)]
    return "; ".join(part for part in parts if part)


def _dispatched(facts: PendingFacts) -> str:
    holder = facts.holder or "a worker"
    return f"dispatched to {holder} (attempt {facts.attempt}); waiting for it to start"


def _queue(facts: PendingFacts) -> str:
    if facts.pending_ahead <= 0:
        return ""
    n = facts.pending_ahead
    ahead = "1 pending execution is" if n == 1 else f"{n} pending executions are"
    return f"{ahead} ahead of it; the master dispatches the oldest first"


def _master(facts: PendingFacts, ages: bool) -> str:
    if facts.master_last_seen is None:
        return "no master has run on this catalog: start `scaleout master`"
    interval = facts.master_heartbeat_interval_s or 30.0
    silent_s = _seconds(facts.now, facts.master_last_seen)
    if silent_s <= max(MASTER_STALE_BEATS * interval, MASTER_STALE_MIN_S):
        return ""
    seen = f" (last seen {age(silent_s)} ago)" if ages else ""
    return f"the master is not running{seen}: start `scaleout master`"


def _workers(facts: PendingFacts, ages: bool) -> str:
    """Why no allowed worker can take it; '' when one can."""
    candidates = facts.candidates
    if not candidates:
        if facts.use_any_worker:
            return "no worker is registered: `scaleout workers add ID --enable`"
        return "the workers it may run on no longer exist: create it again with --worker"
    enabled = [w for w in candidates if w.is_enabled]
    if not enabled:
        return _none_enabled(facts, candidates)
    online = [w for w in enabled if w.is_online]
    if not online:
        return _none_online(facts, enabled, ages)
    if any(_free(w) for w in online):
        return ""
    return _none_free(online)


def _none_enabled(facts: PendingFacts, candidates: Sequence[WorkerAgentRow]) -> str:
    ids = [w.worker_agent_id for w in candidates]
    verb = "is" if len(ids) == 1 else "are"
    what = "no worker is enabled" if facts.use_any_worker else _its("enabled", len(ids))
    return f"{what} ({_names(ids)} {verb} disabled): `scaleout workers enable {ids[0]}`"


def _none_online(facts: PendingFacts, enabled: Sequence[WorkerAgentRow], ages: bool) -> str:
    refused = [w for w in enabled if _refused_since_seen(w)]
    if refused:
        return _refused(refused[0], facts, ages)
    what = "no enabled worker is online" if facts.use_any_worker else _its("online", len(enabled))
    seen = "; ".join(_last_seen(w, facts.now, ages) for w in enabled[:LISTED])
    more = _more(len(enabled))
    first = enabled[0].worker_agent_id
    return f"{what} ({seen}{more}): start `scaleout worker --id {first}`"


def _refused(worker: WorkerAgentRow, facts: PendingFacts, ages: bool) -> str:
    """The master hears only refused messages from this worker (so it looks offline)."""
    when = ""
    if ages and worker.last_refusal_time is not None:
        when = f", {age(_seconds(facts.now, worker.last_refusal_time))} ago"
    wid = worker.worker_agent_id
    detail = f": {worker.last_refusal_detail}" if worker.last_refusal_detail else ""
    return (
        f"the master refuses {wid}'s messages ({worker.last_refusal_reason}{detail}{when}): "
        f"it must log in to RabbitMQ as {wid}; see `scaleout workers show {wid}`"
    )


def _none_free(online: Sequence[WorkerAgentRow]) -> str:
    busy = [w for w in online if w.accepting]
    refusing = [w for w in online if not w.accepting]
    parts = [_busy(w) for w in online[:LISTED]]
    listed = "; ".join(parts) + _more(len(online))
    if not refusing:
        return f"every eligible worker is busy ({listed}); it starts when a task ends"
    if not busy:
        return f"no eligible worker is accepting tasks ({listed})"
    return f"no eligible worker has a free slot ({listed})"


def _busy(worker: WorkerAgentRow) -> str:
    wid = worker.worker_agent_id
    if not worker.accepting:
        why = f": {worker.not_accepting}" if worker.not_accepting else ""
        return f"{wid} is not accepting tasks{why}"
    backlog = f" + a backlog of {worker.task_backlog}" if worker.task_backlog else ""
    return f"{wid} runs {worker.running_tasks}/{worker.max_task_count}{backlog}"


def _free(worker: WorkerAgentRow) -> bool:
    return worker.accepting and worker.running_tasks < worker.capacity


def _refused_since_seen(worker: WorkerAgentRow) -> bool:
    """A ``forged_sender`` refusal after its last accepted heartbeat: the master hears it,
    but refuses it (a stale report, say, does not make a worker look offline)."""
    if worker.last_refusal_time is None or worker.last_refusal_reason != FORGED_SENDER:
        return False
    return worker.last_online_time is None or worker.last_refusal_time >= worker.last_online_time


def _last_seen(worker: WorkerAgentRow, now: datetime, ages: bool) -> str:
    wid = worker.worker_agent_id
    if worker.last_online_time is None:
        return f"{wid} never seen"
    if not ages:
        return f"{wid} offline"
    return f"{wid} last seen {age(_seconds(now, worker.last_online_time))} ago"


def _its(adjective: str, count: int) -> str:
    """'its worker is not online', 'none of its workers is online'."""
    return f"its worker is not {adjective}" if count == 1 else f"none of its workers is {adjective}"


def _names(ids: Sequence[str]) -> str:
    return ", ".join(ids[:LISTED]) + _more(len(ids))


def _more(count: int) -> str:
    return f" and {count - LISTED} more" if count > LISTED else ""


def _seconds(now: datetime, then: datetime) -> float:
    return max((_utc(now) - _utc(then)).total_seconds(), 0.0)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def age(seconds: float) -> str:
    """'4 s', '3 min', '2 h': how the CLI says how long ago."""
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
