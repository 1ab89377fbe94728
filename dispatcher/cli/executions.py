"""`scaleout executions ...`: SSIS's create/start/stop_execution and the views."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dispatcher.api import ScaleOut, Started
from dispatcher.catalog.records import ExecutionRow
from dispatcher.cli import render
from dispatcher.cli.common import (
    ExecutionId,
    FolderOpt,
    JsonFlag,
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
from schemas.states import ExecutionStatus

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
    start: Annotated[bool, opt("--start", env="SCALEOUT_START", help="start it too")] = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
    as_json: JsonFlag = False,
) -> None:
    """Create an execution (SSIS create_execution), optionally start it and wait."""
    params = parse_params(param)
    if retry_count and not (start or wait):
        msg = "--retry-count applies when the execution starts: add --start"
        raise typer.BadParameter(msg, param_hint="--retry-count")
    with session(ctx) as so:
        execution_id = so.create_execution(
            folder, project, package, parameters=params, workers=worker, caller_name="scaleout-cli"
        )
        if not (start or wait):
            _report_id(so, execution_id, as_json)
            return
        _start_and_maybe_wait(
            so, execution_id, retry_count=retry_count, wait=wait, timeout=timeout, as_json=as_json
        )


def _report_id(so: ScaleOut, execution_id: int, as_json: bool) -> None:
    emit(so.execution(execution_id) if as_json else None, as_json, str(execution_id))


def _start_and_maybe_wait(
    so: ScaleOut, execution_id: int, *, retry_count: int, wait: bool, timeout: float, as_json: bool
) -> None:
    _warn(so.start(execution_id, retry_count))
    if not wait:
        _report_id(so, execution_id, as_json)
        return
    with err.status(f"Waiting for execution {execution_id}..."):
        row = so.wait(execution_id, timeout, on_poll=ProgressPrinter())
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
    as_json: JsonFlag = False,
) -> None:
    """Start a created execution (SSIS start_execution); attempts = retry count + 1."""
    with session(ctx) as so:
        _start_and_maybe_wait(
            so, execution_id, retry_count=retry_count, wait=wait, timeout=timeout, as_json=as_json
        )


@executions_app.command("stop")
def executions_stop(
    ctx: typer.Context, execution_id: ExecutionId, as_json: JsonFlag = False
) -> None:
    """Stop an execution (SSIS stop_operation): pending ones cancel now, running ones stop."""
    with session(ctx) as so:
        row = so.stop(execution_id, stopped_by="scaleout-cli")
    emit(row, as_json, f"execution {execution_id} is {row.status.label}")


@executions_app.command("list")
def executions_list(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        opt("--status", env="SCALEOUT_STATUS", help="only this status (e.g. running, failed)"),
    ] = None,
    limit: Annotated[int, opt("--limit", env="SCALEOUT_LIMIT", help="newest N", min=1)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Executions, newest first."""
    wanted = parse_status(status) if status else None
    with session(ctx) as so:
        rows = so.executions(status=wanted, limit=limit)
    emit(rows, as_json, render.executions_table(rows))


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
    """One execution: status, worker, attempts, times, error."""
    with session(ctx) as so:
        row = so.execution(execution_id)
    emit(row, as_json, render.execution_detail(row))


@executions_app.command("logs")
def executions_logs(
    ctx: typer.Context,
    execution_id: ExecutionId,
    follow: Annotated[
        bool, opt("--follow", "-f", env="SCALEOUT_FOLLOW", help="keep printing until it ends")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The execution's messages (catalog.operation_messages / event_messages)."""
    with session(ctx) as so:
        messages = so.follow(execution_id) if follow else iter(so.messages(execution_id))
        for message in messages:
            if as_json:  # one object per line, so --follow streams
                print(json.dumps(render.jsonable(message)), flush=True)
            else:
                out.print(render.message_line(message))
