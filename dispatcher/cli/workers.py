"""`scaleout workers ...`: Scale Out Manager's worker list, +, -, enable, disable."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from dispatcher.catalog.records import WorkerAgentRow
from dispatcher.cli import render
from dispatcher.cli.common import (
    JsonFlag,
    WorkerId,
    emit,
    opt,
    out,
    say,
    session,
)

workers_app = typer.Typer(help="Register and manage worker agents.", no_args_is_help=True)


# -- workers -------------------------------------------------------------------------------


@workers_app.command("add")
def workers_add(  # noqa: PLR0917  # typer passes options by keyword
    ctx: typer.Context,
    worker_id: WorkerId,
    display_name: Annotated[
        str, opt("--display-name", env="SCALEOUT_DISPLAY_NAME", help="name shown to operators")
    ] = "",
    description: Annotated[
        str, opt("--description", env="SCALEOUT_DESCRIPTION", help="free text")
    ] = "",
    enable: Annotated[bool, opt("--enable", env="SCALEOUT_ENABLE", help="enable it now")] = False,
    max_task_count: Annotated[
        int,
        opt(
            "--max-task-count",
            env="SCALEOUT_MAX_TASK_COUNT",
            help="packages at once, until the worker's first heartbeat reports its own",
            min=1,
        ),
    ] = 10,
    as_json: JsonFlag = False,
) -> None:
    """Register a worker agent (disabled unless --enable), as Scale Out Manager's "+"."""
    with session(ctx) as so:
        row = so.add_worker(
            worker_id,
            display_name=display_name,
            description=description,
            enabled=enable,
            max_task_count=max_task_count,
        )
        if warning := so.ensure_worker_queues(worker_id):
            say(f"warning: {warning}", "yellow")
    if row.is_enabled:
        _show_worker(row, as_json, "added and enabled: it gets tasks")
    else:
        hint = f"`scaleout workers enable {row.worker_agent_id}` to give it tasks"
        _show_worker(row, as_json, f"added, disabled: {hint}")


def _show_worker(row: WorkerAgentRow, as_json: bool, what: str) -> None:
    emit(row, as_json, f"worker {row.worker_agent_id} {what}")


def _drain(row: WorkerAgentRow) -> str:
    running = row.running_tasks
    if not running:
        return "disabled: it takes no new tasks, and none is running"
    tasks = "task" if running == 1 else "tasks"
    return f"disabled: it takes no new tasks; {running} running {tasks} will finish"


@workers_app.command("list")
def workers_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Worker agents: online or offline, enabled, running tasks, last seen, last refusal."""
    with session(ctx) as so:
        rows = so.workers()
    emit(rows, as_json, render.workers_table(rows))


@workers_app.command("show")
def workers_show(ctx: typer.Context, worker_id: WorkerId, as_json: JsonFlag = False) -> None:
    """One worker agent: state, load, why it is not accepting, the last refused message."""
    with session(ctx) as so:
        row = so.worker(worker_id)
    emit(row, as_json, render.worker_detail(row))


@workers_app.command("enable")
def workers_enable(ctx: typer.Context, worker_id: WorkerId, as_json: JsonFlag = False) -> None:
    """Enable a worker agent: it gets tasks."""
    with session(ctx) as so:
        _show_worker(so.enable_worker(worker_id), as_json, "enabled: it gets tasks")


@workers_app.command("disable")
def workers_disable(ctx: typer.Context, worker_id: WorkerId, as_json: JsonFlag = False) -> None:
    """Disable (drain) a worker agent: no new tasks; running ones finish."""
    with session(ctx) as so:
        row = so.disable_worker(worker_id)
        _show_worker(row, as_json, _drain(row))


@workers_app.command("set")
def workers_set(
    ctx: typer.Context,
    worker_id: WorkerId,
    name: Annotated[str, typer.Argument(help="DisplayName, Description or Tags")],
    value: Annotated[str, typer.Argument(help="the new value")],
    as_json: JsonFlag = False,
) -> None:
    """Set a worker agent's property (SSIS set_worker_agent_property)."""
    with session(ctx) as so:
        _show_worker(so.set_worker(worker_id, name, value), as_json, f"{name} set to {value!r}")


@workers_app.command("delete")
def workers_delete(ctx: typer.Context, worker_id: WorkerId) -> None:
    """Delete a worker agent (refused while it holds tasks: disable it first)."""
    with session(ctx) as so:
        so.delete_worker(worker_id)
    out.print(Text(f"worker {worker_id} deleted"))
