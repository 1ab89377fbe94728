"""How the CLI shows records: rich tables for people, JSON for scripts.

JSON keeps the catalog's field names; status codes stay numbers (SSIS's) with a
``status_label`` beside them, times are ISO 8601 UTC, ids of tasks are strings.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, OverflowMethod, RenderResult
from rich.padding import PaddingDimensions
from rich.table import Table
from rich.text import Text

from dispatcher.catalog.records import (
    ExecutionRow,
    MasterRole,
    MasterRow,
    MessageRow,
    WorkerAgentRow,
)
from schemas.states import ExecutionStatus, TaskState

STATUS_STYLE = {
    ExecutionStatus.CREATED: "dim",
    ExecutionStatus.PENDING: "yellow",
    ExecutionStatus.RUNNING: "cyan",
    ExecutionStatus.STOPPING: "magenta",
    ExecutionStatus.SUCCEEDED: "green",
    ExecutionStatus.COMPLETED: "green",
    ExecutionStatus.FAILED: "red",
    ExecutionStatus.ENDED_UNEXPECTEDLY: "red",
    ExecutionStatus.CANCELED: "magenta",
}


def jsonable(value: Any) -> Any:  # noqa: PLR0911  # one return per kind of value
    """Records, enums, times and ids as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        status = getattr(value, "status", None)
        if isinstance(status, ExecutionStatus):
            out["status_label"] = status.label
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, uuid.UUID | Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def print_json(console: Console, value: Any) -> None:
    console.print_json(json.dumps(jsonable(value)))


def as_utc(moment: datetime) -> datetime:
    """The catalog stores UTC; SQLite hands naive datetimes back."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def when(moment: datetime | None) -> str:
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'4 s ago', '3 min ago' or 'never'."""
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - as_utc(moment)).total_seconds()
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def duration(row: ExecutionRow) -> str:
    if row.start_time is None:
        return "-"
    end = as_utc(row.end_time) if row.end_time else datetime.now(UTC)
    return f"{(end - as_utc(row.start_time)).total_seconds():.1f} s"


def status_text(status: ExecutionStatus) -> Text:
    return Text(status.label, style=STATUS_STYLE.get(status, ""))


def attempts(row: ExecutionRow) -> str:
    if row.max_executed_count is None:
        return str(row.executed_count)
    return f"{row.executed_count}/{row.max_executed_count}"


ID, FIXED, FLEX = "id", "fixed", "flex"
"""Column kinds of a :class:`Fitted` table: an id is never cut or wrapped; a fixed column
wraps between words only when it must; flexible ones (names, descriptions) fold to fit."""
MIN_FLEX = 4
EDGES = 2
"""The blank edge characters of the table's box, left and right."""


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    justify: JustifyMethod = "left"
    kind: str = FIXED


Cell = str | Text


@dataclass(frozen=True, slots=True)
class Fitted:
    """A compact table laid out for the width it is printed at: ids keep their whole width
    (``COLUMNS=72`` never turns ``1234`` into ``1…``), and the flexible columns share what
    the others leave."""

    title: str
    columns: Sequence[Col]
    rows: Sequence[Sequence[Cell]]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)

    def table(self, width: int) -> Table:
        columns = self._by_column()
        full = [_widest(col.name, cells) for col, cells in columns]
        room = width - EDGES
        if sum(full) + 2 * (len(full) - 1) <= room:  # it fits: rich lays it out
            table = compact_table(self.title)
            for col in self.columns:
                overflow: OverflowMethod = "fold" if col.kind == FLEX else "ellipsis"
                table.add_column(
                    col.name, justify=col.justify, no_wrap=col.kind != FLEX, overflow=overflow
                )
        else:  # too wide: one space between columns, and every width decided here
            words = [_widest_word(col.name, cells) for col, cells in columns]
            widths = self._narrow(room - (len(full) - 1), full, words)
            table = compact_table(self.title, padding=0)
            for col, size in zip(self.columns, widths, strict=True):
                table.add_column(
                    col.name,
                    justify=col.justify,
                    no_wrap=col.kind == ID,
                    overflow="fold",
                    width=size,
                )
        for row in self.rows:
            table.add_row(*row)
        return table

    def _by_column(self) -> list[tuple[Col, list[Cell]]]:
        return [(col, [row[i] for row in self.rows]) for i, col in enumerate(self.columns)]

    def _narrow(self, room: int, full: list[int], words: list[int]) -> list[int]:
        """Widths that fit ``room``: ids whole; fixed columns whole, else their longest
        word; the flexible columns share the rest (at least MIN_FLEX each)."""
        kinds = [col.kind for col in self.columns]
        widths = [full[i] if kind != FLEX else 0 for i, kind in enumerate(kinds)]
        flex = [i for i, kind in enumerate(kinds) if kind == FLEX]
        if room - sum(widths) < MIN_FLEX * len(flex):
            widths = [words[i] if kind == FIXED else widths[i] for i, kind in enumerate(kinds)]
        left = room - sum(widths)
        for n, i in enumerate(sorted(flex, key=lambda i: full[i])):  # narrowest first
            share = max(left // (len(flex) - n), MIN_FLEX)
            widths[i] = min(full[i], share)
            left -= widths[i]
        widths = _squeeze(widths, room, flex, floor=2)
        return _squeeze(widths, room, [i for i, kind in enumerate(kinds) if kind == FIXED])


def _squeeze(widths: list[int], room: int, shrinkable: list[int], floor: int = 1) -> list[int]:
    """Still too wide: narrow the widest of ``shrinkable``, a character at a time, down to
    ``floor``; an id is never among them, so it keeps its width whatever the terminal."""
    widths = list(widths)
    while sum(widths) > room:
        widest = max(shrinkable, key=lambda i: widths[i], default=None)
        if widest is None or widths[widest] <= floor:
            break
        widths[widest] -= 1
    return widths


def _text(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else cell


def _widest(header: str, cells: Iterable[Cell]) -> int:
    return max([cell_len(header), *(cell_len(_text(c)) for c in cells)])


def _widest_word(header: str, cells: Iterable[Cell]) -> int:
    texts = [header, *(_text(c) for c in cells)]
    return max(cell_len(word) for text in texts for word in (text.split() or [""]))


def compact_table(title: str, *, padding: PaddingDimensions = (0, 1)) -> Table:
    """A table that fits 80 columns: no vertical rules, no outer padding."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        padding=padding,
    )


def executions_table(rows: Iterable[ExecutionRow], *, title: str = "Executions") -> Fitted:
    columns = (
        Col("id", "right", ID),
        Col("project", kind=FLEX),
        Col("package", kind=FLEX),
        Col("worker", kind=ID),
        Col("attempts", "right"),
        Col("status"),
        Col("created"),  # when it was created (list filters by it); show has the start
        Col("duration", "right"),
    )
    cells = [
        (
            str(row.execution_id),
            row.project_name,
            row.package_name,
            row.worker_agent_id or "-",
            attempts(row),
            status_text(row.status),
            as_utc(row.created_time).strftime("%m-%d %H:%M:%S"),
            duration(row),
        )
        for row in rows
    ]
    return Fitted(title, columns, cells)


def execution_detail(row: ExecutionRow) -> Table:
    table = Table(show_header=False, title=f"Execution {row.execution_id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    fields: Sequence[tuple[str, str | Text]] = (
        ("status", status_text(row.status)),
        ("folder", row.folder_name),
        ("project", f"{row.project_name} (lsn {row.project_lsn or '-'})"),
        ("package", row.package_name),
        ("worker", row.worker_agent_id or "-"),
        ("allowed workers", ", ".join(row.allowed_workers) if row.allowed_workers else "any"),
        ("attempts", attempts(row)),
        ("created", when(row.created_time)),
        ("started", when(row.start_time)),
        ("ended", when(row.end_time)),
        ("duration", duration(row)),
        ("caller", row.caller_name or "-"),
        ("stopped by", row.stopped_by_name or "-"),
        (
            "task",
            f"{row.task_id or '-'} ({row.task_state.name.lower() if row.task_state else '-'})",
        ),
        ("progress", progress_text(row) or "-"),
        ("error", row.error or "-"),
    )
    for name, value in fields:
        table.add_row(name, value)
    return table


def phase(row: ExecutionRow) -> tuple[str, str]:
    """Where the execution is, as --wait says it: ('running', 'running on w1 (attempt 1)');
    a pending task already given to a worker is 'dispatched'."""
    attempt = f" (attempt {row.attempt})" if row.attempt else ""
    worker = row.worker_agent_id or row.holder
    if row.status is ExecutionStatus.PENDING:
        if row.task_state is TaskState.DISPATCHED:
            return "dispatched", f"dispatched to {worker}{attempt}"
        if row.attempt:
            return "pending", f"pending again after attempt {row.attempt}"
        return "pending", "pending"
    label = row.status.label
    if worker and row.attempt:
        return label, f"{label} on {worker}{attempt}"
    return label, label


def progress_text(row: ExecutionRow, *, age: bool = True) -> str:
    """'42.5 % Loading rows (attempt 1, 3 s ago)'; '' before any progress is stored."""
    if row.progress_time is None:
        return ""
    parts = [] if row.progress_percent is None else [f"{percent(row.progress_percent)} %"]
    if row.progress_message:
        parts.append(row.progress_message)
    context = f"attempt {row.attempt}" + (f", {ago(row.progress_time)}" if age else "")
    return f"{' '.join(parts)} ({context})"


def percent(value: float) -> str:
    """42.5, 100, 33.3: one decimal at most."""
    return f"{value:.1f}".removesuffix(".0")


def _task_state(row: ExecutionRow) -> str:
    return row.task_state.name.lower() if row.task_state else "-"


def workers_table(rows: Iterable[WorkerAgentRow]) -> Fitted:
    columns = (
        Col("id", kind=ID),
        Col("display name", kind=FLEX),
        Col("state"),
        Col("enabled"),
        Col("running", "right"),
        Col("machine", kind=FLEX),
        Col("last seen"),
        Col("refused"),
    )
    now = datetime.now(UTC)
    cells = [
        (
            row.worker_agent_id,
            row.display_name or "-",
            worker_state(row),
            "yes" if row.is_enabled else Text("no", style="yellow"),
            f"{row.running_tasks}/{row.max_task_count}",
            row.machine_name or "-",
            ago(row.last_online_time, now),
            refusal_text(row, now) or "-",
        )
        for row in rows
    ]
    return Fitted("Worker agents", columns, cells)


def worker_state(row: WorkerAgentRow) -> Text:
    """online, offline, or 'not accepting' (online, but its heartbeat refuses tasks)."""
    if not row.is_online:
        return Text("offline", style="red")
    if not row.accepting:
        return Text("not accepting", style="yellow")
    return Text("online", style="green")


def refusal_text(row: WorkerAgentRow, now: datetime | None = None) -> str:
    """'forged_sender 12 s ago'; '' when none was recorded."""
    if not row.last_refusal_reason:
        return ""
    return f"{row.last_refusal_reason} {ago(row.last_refusal_time, now)}"


def worker_detail(row: WorkerAgentRow) -> Table:
    table = Table(show_header=False, title=f"Worker {row.worker_agent_id}", title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    refused = refusal_text(row)
    fields: Sequence[tuple[str, str | Text]] = (
        ("state", worker_state(row)),
        ("enabled", "yes" if row.is_enabled else Text("no", style="yellow")),
        ("display name", row.display_name or "-"),
        ("description", row.description or "-"),
        ("machine", row.machine_name or "-"),
        ("user account", row.user_account or "-"),
        ("tags", row.tags or "-"),
        ("running", f"{row.running_tasks}/{row.max_task_count}"),
        ("task backlog", str(row.task_backlog) if row.task_backlog else "-"),
        ("last seen", _seen(row.last_online_time)),
        ("cpu", "-" if row.cpu_percent is None else f"{percent(row.cpu_percent)} %"),
        ("free memory", _megabytes(row.free_memory_mb)),
        ("free disk", _megabytes(row.free_disk_mb)),
        ("accepting", "yes" if row.accepting else f"no: {row.not_accepting or 'no reason given'}"),
        ("last refused", f"{refused}: {row.last_refusal_detail}" if refused else "-"),
        ("refused at", when(row.last_refusal_time)),
    )
    for name, value in fields:
        table.add_row(name, value)
    return table


def _seen(moment: datetime | None) -> str:
    return f"{when(moment)} ({ago(moment)})" if moment else "never"


def _megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MB"


MESSAGE_LEVELS = {
    120: "error",
    130: "failed",
    110: "warning",
    70: "info",
    60: "progress",
    50: "status",
    140: "diag",
    90: "diag",
}
"""SSIS ``message_type`` names for the level column (others print as their number)."""
LEVEL_WIDTH = 8
_LEVEL_STYLE = {120: "red", 130: "red", 110: "yellow", 60: "dim"}


def level(message_type: int) -> str:
    return MESSAGE_LEVELS.get(message_type, str(message_type))


def message_line(message: MessageRow) -> Text:
    """'2026-12-09 12:00:01 info     #1 Loading rows': time, level, attempt, text."""
    attempt = f"#{message.attempt}" if message.attempt else "-"
    style = _LEVEL_STYLE.get(message.message_type, "")
    line = Text(f"{when(message.message_time)} ", style="dim")
    line.append(f"{level(message.message_type):<{LEVEL_WIDTH}} ", style=style or "dim")
    line.append(f"{attempt:>2} ", style="dim")
    line.append(message.message, style="red" if style == "red" else "")
    return line


def status_counts(rows: Iterable[ExecutionRow]) -> str:
    """'3 pending · 5 running · 2 succeeded · 1 retried', for a progress line."""
    counts: dict[str, int] = {}
    retried = 0
    for row in rows:
        counts[row.status.label] = counts.get(row.status.label, 0) + 1
        retried += row.executed_count > 1
    text = " · ".join(f"{n} {label}" for label, n in sorted(counts.items()))
    return f"{text} · {retried} retried" if retried else text


def workers_line(workers: Iterable[WorkerAgentRow]) -> Text:
    parts = [
        f"{w.worker_agent_id} {'online' if w.is_online else 'offline'} "
        f"{w.running_tasks}/{w.max_task_count} running"
        for w in workers
    ]
    return Text("workers: " + " | ".join(parts), style="dim")


def demo_table(verdicts: Iterable[tuple[ExecutionRow, bool, str]]) -> Table:
    """The demo's final table: (row, as planned?, what was planned) per execution."""
    table = compact_table("Demo executions")
    for name in ("id", "package", "worker", "attempts", "status", "duration", "as planned"):
        table.add_column(name, no_wrap=True)
    for row, ok, note in verdicts:
        table.add_row(
            str(row.execution_id),
            row.package_name,
            row.worker_agent_id or "-",
            str(row.executed_count),
            status_text(row.status),
            duration(row),
            Text(f"yes: {note}", style="green") if ok else Text("NO", style="bold red"),
        )
    return table


def masters_table(rows: Iterable[MasterRow]) -> Fitted:
    columns = (
        Col("id", kind=ID),
        Col("role"),
        Col("epoch", "right"),
        Col("state"),
        Col("machine", kind=FLEX),
        Col("metrics", "right"),
        Col("started"),
        Col("last seen"),
    )
    now = datetime.now(UTC)
    cells = [
        (
            row.master_id,
            master_role(row),
            str(row.epoch) if row.epoch is not None else "-",
            "online" if row.is_online else Text("offline", style="yellow"),
            row.machine_name or "-",
            str(row.metrics_port) if row.metrics_port else "-",
            ago(row.started_time, now),
            ago(row.last_online_time, now),
        )
        for row in rows
    ]
    return Fitted("Masters", columns, cells)


def master_role(row: MasterRow) -> Text:
    """leader (holding the lease), standby, stopped; a leader row whose lease lapsed is
    shown as such: that master is gone or paused, and a standby is about to take over."""
    if row.holds_lease:
        return Text("leader", style="bold green")
    if row.role is MasterRole.LEADER:
        return Text("leader, lease lapsed", style="red")
    return Text(row.role.value)
