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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dispatcher.catalog.records import ExecutionRow, MessageRow, WorkerAgentRow
from schemas.states import ExecutionStatus

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


def compact_table(title: str) -> Table:
    """A table that fits 80 columns: no vertical rules, no outer padding."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )


def executions_table(rows: Iterable[ExecutionRow], *, title: str = "Executions") -> Table:
    table = compact_table(title)
    for name, justify in (
        ("id", "right"),
        ("project", "left"),
        ("package", "left"),
        ("worker", "left"),
        ("attempts", "right"),
        ("status", "left"),
        ("started", "left"),
        ("duration", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            str(row.execution_id),
            row.project_name,
            row.package_name,
            row.worker_agent_id or "-",
            attempts(row),
            status_text(row.status),
            as_utc(row.start_time).strftime("%m-%d %H:%M:%S") if row.start_time else "-",
            duration(row),
        )
    return table


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


def workers_table(rows: Iterable[WorkerAgentRow]) -> Table:
    table = compact_table("Worker agents")
    for name in ("id", "display name", "state", "enabled", "running", "machine", "last seen"):
        table.add_column(name)
    now = datetime.now(UTC)
    for row in rows:
        table.add_row(
            row.worker_agent_id,
            row.display_name or "-",
            Text("online", style="green") if row.is_online else Text("offline", style="red"),
            "yes" if row.is_enabled else Text("no", style="yellow"),
            f"{row.running_tasks}/{row.max_task_count}",
            row.machine_name or "-",
            ago(row.last_online_time, now),
        )
    return table


def message_line(message: MessageRow) -> Text:
    attempt = f" #{message.attempt}" if message.attempt else ""
    style = "red" if message.message_type in {110, 120, 130} else ""
    line = Text(f"{when(message.message_time)}{attempt} ", style="dim")
    line.append(message.message, style=style)
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
