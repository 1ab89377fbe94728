"""`scaleout executions ...`: SSIS's create/start/stop_execution and the views."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from dispatcher.api import ScaleOut, Started, WaitTimeout
from dispatcher.catalog.procedures import MAX_EXECUTIONS_PER_CALL as MAX_COUNT
from dispatcher.catalog.records import ExecutionFilter, ExecutionRow, MessageRow
from dispatcher.cli import render, render_objects
from dispatcher.cli.common import (
    ExecutionId,
    FolderOpt,
    JsonFlag,
    QuietOpt,
    RetryOpt,
    TimeoutOpt,
    WaitOpt,
    emit,
    err,
    opt,
    out,
    say,
    session,
)
from dispatcher.pending import explain
from schemas.states import ExecutionStatus, TaskState

executions_app = typer.Typer(help="Create, start, stop and watch executions.", no_args_is_help=True)


# -- executions ----------------------------------------------------------------------------


def parse_params(values: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            msg = f"{item!r} is not name=value"
            raise typer.BadParameter(msg, param_hint="--param")
        params[name.strip()] = value
    return params


@executions_app.command("create")
def executions_create(  # noqa: PLR0917  # typer passes options by keyword
    ctx: typer.Context,
    folder: FolderOpt,
    project: Annotated[str, opt("--project", env="SCALEOUT_PROJECT", help="project name")],
    package: Annotated[str, opt("--package", env="SCALEOUT_PACKAGE", help="package name")],
    param: Annotated[
        list[str],
        opt(
            "--param",
            env="SCALEOUT_PARAMS",
            help="name=value, repeatable; prefix $Project:: or $Package:: where ambiguous",
        ),
    ] = [],  # noqa: B006  # typer reads the default; it is never mutated
    worker: Annotated[
        list[str],
        opt("--worker", env="SCALEOUT_WORKERS", help="run only on this worker, repeatable"),
    ] = [],  # noqa: B006
    retry_count: RetryOpt = 0,
    reference: Annotated[
        int | None,
        opt(
            "--reference",
            env="SCALEOUT_REFERENCE",
            help="environment reference id: referenced parameters take its variables' values",
        ),
    ] = None,
    start: Annotated[bool, opt("--start", env="SCALEOUT_START", help="start it too")] = False,
    count: Annotated[
        int,
        opt(
            "--count",
            env="SCALEOUT_COUNT",
            help=f"with --start: this many executions, in one transaction (1 to {MAX_COUNT})",
            min=1,
            max=MAX_COUNT,
        ),
    ] = 1,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
    quiet: QuietOpt = False,
    as_json: JsonFlag = False,
) -> None:
    """Create an execution (SSIS create_execution), optionally start it and wait."""
    params = parse_params(param)
    if retry_count and not (start or wait):
        msg = "--retry-count applies when the execution starts: add --start"
        raise typer.BadParameter(msg, param_hint="--retry-count")
    if count > 1:
        _check_many(start=start, wait=wait)
        with session(ctx) as so:
            many = so.run_many(
                folder, project, package, count, parameters=params, workers=worker,
                retry_count=retry_count, caller_name="scaleout-cli", reference_id=reference,
            )  # fmt: skip
        if many.warning:
            say(f"warning: {many.warning}", "yellow")
        first, last = many.execution_ids[0], many.execution_ids[-1]
        emit(many.execution_ids, as_json, f"executions {first} to {last} created and started")
        return
    with session(ctx) as so:
        if not (start or wait):
            execution_id = so.create_execution(
                folder, project, package, parameters=params, workers=worker,
                caller_name="scaleout-cli", reference_id=reference,
            )  # fmt: skip
            hint = f"start it with `scaleout executions start {execution_id}`"
            _report(so, execution_id, as_json, f"created: {hint}")
            return
        # Created and started in one transaction: a refused start leaves no execution.
        started = so.run(
            folder, project, package, parameters=params, workers=worker,
            retry_count=retry_count, caller_name="scaleout-cli", reference_id=reference,
        )  # fmt: skip
        how = Waiting(wait, timeout, quiet, created=True)
        _after_start(so, started, how, as_json=as_json)


def _check_many(*, start: bool, wait: bool) -> None:
    if not start:
        msg = "--count creates and starts many executions: add --start"
        raise typer.BadParameter(msg, param_hint="--count")
    if wait:
        msg = "--wait follows one execution; with --count, watch `scaleout executions list`"
        raise typer.BadParameter(msg, param_hint="--count")


def _report(so: ScaleOut, execution_id: int, as_json: bool, what: str) -> None:
    """The execution's row for --json, else 'execution 5 <what>'."""
    row = so.execution(execution_id) if as_json else None
    emit(row, as_json, f"execution {execution_id} {what}")


@dataclass(frozen=True, slots=True)
class Waiting:
    """What --wait, --timeout and --quiet asked for; ``created`` by this command."""

    wait: bool
    timeout: float
    quiet: bool
    created: bool


def _start_and_maybe_wait(
    so: ScaleOut, execution_id: int, how: Waiting, *, as_json: bool, retry_count: int
) -> None:
    _after_start(so, so.start(execution_id, retry_count), how, as_json=as_json)


def _after_start(so: ScaleOut, started: Started, how: Waiting, *, as_json: bool) -> None:
    _warn(started)
    execution_id = started.execution_id
    done = "created and started" if how.created else "started"
    if not how.wait:
        _report(so, execution_id, as_json, done)
        return
    say(f"execution {execution_id} {done}; waiting (Ctrl-C stops waiting, not the execution)")
    watcher = Watcher(so, execution_id, quiet=how.quiet)
    try:
        with err.status(f"Waiting for execution {execution_id}..."):
            row = so.wait(execution_id, how.timeout, on_poll=watcher)
    except WaitTimeout as exc:
        watcher.drain()
        if exc.row is not None:  # stdout keeps the result, so a script still has the id
            emit(exc.row, as_json, render.execution_detail(exc.row))
        raise
    except KeyboardInterrupt:
        say(f"stopped waiting; execution {execution_id} goes on: `scaleout executions show "
            f"{execution_id}`, or `scaleout executions stop {execution_id}`", "yellow")  # fmt: skip
        raise typer.Exit(130) from None
    watcher.drain()
    emit(row, as_json, render.execution_detail(row))
    if row.status is not ExecutionStatus.SUCCEEDED:
        raise typer.Exit(1)


class ProgressPrinter:
    """One stderr line each time the stored progress changes (stdout stays for --json)."""

    def __init__(self) -> None:
        self._last: tuple[object, ...] | None = None

    def __call__(self, row: ExecutionRow) -> None:
        if row.progress_time is None:
            return
        now = (row.attempt, row.progress_percent, row.progress_message)
        if now != self._last:
            self._last = now
            say(f"progress: {render.progress_text(row, age=False)}", "dim")


LOG_PAGE = 200
"""Log lines --wait reads per poll: a flood is paged (and catches up poll by poll)."""
REASON_EVERY_S = 1.0
"""How often --wait asks the catalog why a pending execution waits."""


class Watcher:
    """What --wait prints on stderr while it waits: each status change, the progress, the
    package's log lines as they arrive (paged, each once) and, while the execution stays
    pending, why (once, and again when the reason changes). ``quiet`` keeps only why."""

    def __init__(
        self,
        so: ScaleOut,
        execution_id: int,
        *,
        quiet: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._so = so
        self._execution_id = execution_id
        self._quiet = quiet
        self._clock = clock
        self._feed = so.feed(execution_id, page=LOG_PAGE)
        self._progress = ProgressPrinter()
        self._phase, self._shown = "created", "created"
        self._reason: str | None = None
        self._next_reason = 0.0

    def __call__(self, row: ExecutionRow) -> None:
        self._status(row)
        if not self._quiet:
            self._progress(row)
            self._print(self._feed.poll())
        self._why(row)

    def drain(self) -> None:
        """The log lines stored since the last poll, a page at a time."""
        if self._quiet:
            return
        while batch := self._feed.poll():
            self._print(batch)

    def _print(self, messages: list[MessageRow]) -> None:
        for message in messages:
            err.print(render.message_line(message))

    def _status(self, row: ExecutionRow) -> None:
        short, full = render.phase(row)
        if short != self._phase or full != self._shown:
            if not self._quiet:
                say(f"{self._phase} -> {full}", "bold")
            self._phase, self._shown = short, full

    def _why(self, row: ExecutionRow) -> None:
        if row.status is not ExecutionStatus.PENDING or row.task_state is TaskState.DISPATCHED:
            self._reason = None  # said again if it waits again
            return
        if self._clock() < self._next_reason:
            return
        self._next_reason = self._clock() + REASON_EVERY_S
        facts = self._so.pending_facts(self._execution_id)
        if facts.task_state is TaskState.DISPATCHED:  # the status line says so already
            return
        reason = explain(facts, ages=False)
        if reason != self._reason:
            self._reason = reason
            if reason:
                say(f"waiting: {explain(facts)}", "yellow")


def _warn(started: Started) -> None:
    if started.warning:
        say(f"warning: {started.warning}", "yellow")


@executions_app.command("start")
def executions_start(  # noqa: PLR0917  # typer passes options by keyword
    ctx: typer.Context,
    execution_id: ExecutionId,
    retry_count: RetryOpt = 0,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
    quiet: QuietOpt = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a created execution (SSIS start_execution); attempts = retry count + 1."""
    how = Waiting(wait, timeout, quiet, created=False)
    with session(ctx) as so:
        _start_and_maybe_wait(so, execution_id, how, as_json=as_json, retry_count=retry_count)


@executions_app.command("rerun")
def executions_rerun(  # noqa: PLR0917  # typer passes options by keyword
    ctx: typer.Context,
    execution_id: ExecutionId,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
    quiet: QuietOpt = False,
    as_json: JsonFlag = False,
) -> None:
    """Run an execution again: a new execution of the same package with the same values,
    allowed workers and retry count, started now (sensitive values stay encrypted)."""
    with session(ctx) as so:
        new_id = so.rerun_execution(execution_id, caller="scaleout-cli")
        how = Waiting(wait, timeout, quiet, created=True)
        if not wait:
            _report(so, new_id, as_json, f"created and started (a rerun of {execution_id})")
            return
        _after_start(so, Started(new_id, woken=True), how, as_json=as_json)


@executions_app.command("stop")
def executions_stop(
    ctx: typer.Context, execution_id: ExecutionId, as_json: JsonFlag = False
) -> None:
    """Stop an execution (SSIS stop_operation): pending ones cancel now, running ones stop."""
    with session(ctx) as so:
        row = so.stop(execution_id, stopped_by="scaleout-cli")
    emit(row, as_json, f"execution {execution_id} is {row.status.label}")


@executions_app.command("list")
def executions_list(  # noqa: PLR0917  # typer passes options by keyword
    ctx: typer.Context,
    status: Annotated[
        str | None,
        opt("--status", env="SCALEOUT_STATUS", help="only this status (e.g. running, failed)"),
    ] = None,
    limit: Annotated[int, opt("--limit", env="SCALEOUT_LIMIT", help="newest N", min=1)] = 50,
    folder: Annotated[
        str | None, opt("--folder", env="SCALEOUT_FOLDER", help="only this folder")
    ] = None,
    project: Annotated[
        str | None, opt("--project", env="SCALEOUT_PROJECT", help="only this project")
    ] = None,
    package: Annotated[
        str | None, opt("--package", env="SCALEOUT_PACKAGE", help="only this package")
    ] = None,
    since: Annotated[
        str | None,
        opt(
            "--since",
            env="SCALEOUT_SINCE",
            help="created at or after: ISO time (UTC unless it says) or an age: 30m, 2h, 1d",
        ),
    ] = None,
    until: Annotated[
        str | None, opt("--until", env="SCALEOUT_UNTIL", help="created before: as --since")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Executions, newest first, with when each was created."""
    wanted = parse_status(status) if status else None
    where = ExecutionFilter(
        folder=folder,
        project=project,
        package=package,
        created_after=parse_time(since, "--since") if since else None,
        created_before=parse_time(until, "--until") if until else None,
    )
    with session(ctx) as so:
        rows = so.executions(status=wanted, limit=limit, where=where)
    emit(rows, as_json, render.executions_table(rows))


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, option: str) -> datetime:
    """An aware UTC time from ISO 8601 (naive means UTC) or an age before now (``2h``)."""
    if match := _AGE.match(text.strip()):
        return datetime.now(UTC) - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"{text!r} is neither an ISO time (2026-12-01T08:00) nor an age (30m, 2h, 1d)"
        raise typer.BadParameter(msg, param_hint=option) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_status(text: str) -> ExecutionStatus:
    key = text.strip().replace(" ", "_").replace("-", "_").upper()
    if key.isdigit() and int(key) in ExecutionStatus._value2member_map_:
        return ExecutionStatus(int(key))
    if key in ExecutionStatus.__members__:
        return ExecutionStatus[key]
    names = ", ".join(s.label.replace(" ", "_") for s in ExecutionStatus)
    raise typer.BadParameter(f"{text!r} is not one of {names}", param_hint="--status")


@executions_app.command("show")
def executions_show(
    ctx: typer.Context, execution_id: ExecutionId, as_json: JsonFlag = False
) -> None:
    """One execution: status, worker, attempts, times, error, its parameter values
    (sensitive ones masked) and, while it is pending, why it waits."""
    with session(ctx) as so:
        row = so.execution(execution_id)
        values = so.execution_values(execution_id)
        waiting = so.why_pending(execution_id) if row.status is ExecutionStatus.PENDING else ""
    if as_json:
        data = {**render.jsonable(row), "parameters": render.jsonable(values)}
        emit({**data, "waiting": waiting}, as_json, "")
        return
    out.print(render.execution_detail(row))
    out.print(render_objects.values_table(values))
    if waiting:
        say(f"waiting: {waiting}", "yellow")


@executions_app.command("logs")
def executions_logs(
    ctx: typer.Context,
    execution_id: ExecutionId,
    follow: Annotated[
        bool, opt("--follow", "-f", env="SCALEOUT_FOLLOW", help="keep printing until it ends")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The execution's messages (catalog.operation_messages / event_messages) in time order,
    with their level (info, warning, error, progress, ...)."""
    with session(ctx) as so:
        messages = so.follow(execution_id) if follow else so.log(execution_id)
        for message in messages:
            if as_json:  # one object per line, so --follow streams
                print(json.dumps(render.jsonable(message)), flush=True)
            else:
                out.print(render.message_line(message))
