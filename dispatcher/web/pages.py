"""The console's pages: one small handler per route. Reads come from the catalog (the
API's reads and :mod:`dispatcher.catalog.console`); changes are :class:`ScaleOut` calls,
made in the signed-in user's name, and logged as ``web.change``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jinja2 import Environment
from markupsafe import Markup
from starlette.responses import Response

from dispatcher.catalog.console import (
    MASK,
    ConsoleReads,
    ExecutionFilter,
    PackageInfo,
    ProjectInfo,
    known_statuses,
)
from dispatcher.catalog.records import WorkerAgentRow
from dispatcher.errors import NotFound
from dispatcher.pending import age
from dispatcher.web import charts
from dispatcher.web.context import BadInput, Ctx
from schemas.states import ExecutionStatus

PAGE = 50
LOG_PAGE = 500
EDITABLE = {"display_name": "DisplayName", "description": "Description", "tags": "Tags"}
OBJECT_TYPES = {20: "project", 30: "package", 50: "server option"}


def reads(ctx: Ctx) -> ConsoleReads:
    return ctx.so.catalog.console()


# -- workers -------------------------------------------------------------------------------


def workers(ctx: Ctx) -> Response:
    rows = ctx.so.workers()
    if ctx.fragment:
        return ctx.render("_workers_table.html", workers=rows)
    return ctx.render("workers.html", workers=rows, page="workers")


def worker(ctx: Ctx) -> Response:
    row = ctx.so.worker(ctx.request.path_params["worker_id"])
    if ctx.fragment:
        return ctx.render("_worker_state.html", w=row)
    return ctx.render("worker.html", w=row, page="workers")


def worker_add(ctx: Ctx) -> Response:
    worker_id = ctx.field("worker_id")
    if not worker_id:
        raise BadInput("a worker needs an id", hint="e.g. w1 or etl-host-1")
    row = ctx.so.add_worker(
        worker_id,
        display_name=ctx.field("display_name"),
        description=ctx.field("description"),
        enabled=ctx.field("enabled") == "on",
        max_task_count=_int(ctx.field("max_task_count", "10"), "MaxTaskCount", minimum=1),
    )
    ctx.audit("worker.add", worker_id)
    ctx.flash(f"worker {worker_id} added, {'enabled' if row.is_enabled else 'disabled'}")
    if warning := ctx.so.ensure_worker_queues(worker_id):
        ctx.flash(warning, "warning")
    return ctx.redirect(f"/workers/{worker_id}")


def worker_change(ctx: Ctx) -> Response:
    worker_id = ctx.request.path_params["worker_id"]
    action = ctx.request.path_params["action"]
    if action == "enable":
        ctx.so.enable_worker(worker_id)
        ctx.flash(f"worker {worker_id} enabled: it gets tasks")
    elif action == "disable":
        row = ctx.so.disable_worker(worker_id)
        ctx.flash(f"worker {worker_id} {_drain(row)}")
    elif action == "edit":
        _edit(ctx, ctx.so.worker(worker_id))
    elif action == "delete":
        ctx.so.delete_worker(worker_id)
        ctx.audit("worker.delete", worker_id)
        ctx.flash(f"worker {worker_id} deleted")
        return ctx.redirect("/workers")
    else:
        raise NotFound(f"no action {action!r} on workers", hint="enable, disable, edit, delete")
    ctx.audit(f"worker.{action}", worker_id)
    return ctx.redirect(f"/workers/{worker_id}")


def _edit(ctx: Ctx, row: WorkerAgentRow) -> None:
    changed = []
    for field, name in EDITABLE.items():
        value = ctx.field(field, getattr(row, field))
        if value != getattr(row, field):
            ctx.so.set_worker(row.worker_agent_id, name, value)
            changed.append(name)
    ctx.flash(f"{', '.join(changed)} set" if changed else "nothing changed")


def _drain(row: WorkerAgentRow) -> str:
    if not row.running_tasks:
        return "disabled: it takes no new tasks, and none is running"
    return f"disabled: it takes no new tasks; {row.running_tasks} running will finish"


def verdict(worker: WorkerAgentRow) -> str:
    """Why this worker does or does not take a pending task now (the dispatcher's rule)."""
    if not worker.is_enabled:
        return "disabled"
    if not worker.is_online:
        return "offline" if worker.last_online_time is None else "offline (heartbeats stopped)"
    if not worker.accepting:
        return f"not accepting tasks{': ' + worker.not_accepting if worker.not_accepting else ''}"
    if worker.running_tasks >= worker.capacity:
        return f"busy: {worker.running_tasks}/{worker.max_task_count}"
    return "free: can take it"


# -- executions ----------------------------------------------------------------------------


def executions(ctx: Ctx) -> Response:
    query = ctx.request.query_params
    try:
        where = parse_filter(query.getlist("status"), dict(query))
    except BadInput as exc:
        return ctx.render(
            "executions.html",
            400,
            error=str(exc),
            rows=[],
            q=query,
            page="executions",
            statuses=list(ExecutionStatus),
            next_before=None,
        )
    before = _optional_int(query.get("before"), "before")
    found = reads(ctx).executions_page(where, before=before, limit=PAGE)
    context: dict[str, Any] = {
        "rows": found.rows,
        "next_before": found.next_before,
        "q": query,
        "statuses": list(ExecutionStatus),
        "page": "executions",
    }
    if ctx.fragment:
        return ctx.render("_executions_table.html", **context)
    return ctx.render("executions.html", **context)


def parse_filter(status: list[str], query: dict[str, str]) -> ExecutionFilter:
    try:
        statuses = known_statuses([s for s in status if s])
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    since, until = (
        _moment(query.get("since", ""), "since"),
        _moment(query.get("until", ""), "until"),
    )
    if since and until and since >= until:
        raise BadInput("'since' must be before 'until'")
    return ExecutionFilter(
        statuses=statuses,
        folder=query.get("folder", "").strip(),
        project=query.get("project", "").strip(),
        package=query.get("package", "").strip(),
        worker=query.get("worker", "").strip(),
        since=since,
        until=until,
    )


def _moment(text: str, name: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"{name!r} is not a time: {text!r}", hint="use 2026-12-02T14:30 (UTC)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def execution(ctx: Ctx) -> Response:
    execution_id = int(ctx.request.path_params["execution_id"])
    row = ctx.so.execution(execution_id)
    context: dict[str, Any] = {"e": row, "page": "executions", **_execution_state(ctx, row)}
    if ctx.fragment:
        return ctx.render("_execution_state.html", **context)
    context["parameters"] = reads(ctx).execution_parameters(execution_id)
    context["object_types"] = OBJECT_TYPES
    return ctx.render("execution.html", **context)


def _execution_state(ctx: Ctx, row: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"attempts": ctx.so.catalog.execution_attempts(row.execution_id)}
    if row.status is ExecutionStatus.PENDING:
        facts = ctx.so.pending_facts(row.execution_id)
        state["why"] = ctx.so.why_pending(row.execution_id)
        state["candidates"] = [(w, verdict(w)) for w in facts.candidates]
    return state


def execution_log(ctx: Ctx) -> Response:
    """New log lines after ``after`` (a message id), with the poller for the next ones;
    no poller once the execution has ended and every line is shown."""
    execution_id = int(ctx.request.path_params["execution_id"])
    after = _optional_int(ctx.request.query_params.get("after"), "after") or 0
    ended = ctx.so.execution(execution_id).status.is_terminal
    lines = ctx.so.messages(execution_id, after_id=after, limit=LOG_PAGE)
    last = lines[-1].message_id if lines else after
    follow = bool(lines) or not ended
    return ctx.render(
        "_log_lines.html",
        lines=lines,
        execution_id=execution_id,
        after=last,
        follow=follow,
        delay_ms=0 if len(lines) == LOG_PAGE else ctx.console.settings.poll_ms // 2,
    )


def execution_stop(ctx: Ctx) -> Response:
    execution_id = int(ctx.request.path_params["execution_id"])
    row = ctx.so.stop(execution_id, stopped_by=ctx.user.name)
    ctx.audit("execution.stop", str(execution_id))
    ctx.flash(f"execution {execution_id}: stop requested ({row.status.label})")
    return ctx.redirect(f"/executions/{execution_id}")


def execution_rerun(ctx: Ctx) -> Response:
    """Run again: a new execution of the same package with the same values and allowed
    workers (sensitive ones copied encrypted, never through the browser)."""
    execution_id = int(ctx.request.path_params["execution_id"])
    new_id = ctx.so.rerun_execution(execution_id, caller=ctx.user.name)
    ctx.audit("execution.rerun", f"{execution_id} -> {new_id}")
    ctx.flash(f"execution {new_id}: started again from execution {execution_id}")
    return ctx.redirect(f"/executions/{new_id}")


# -- projects ------------------------------------------------------------------------------


def projects(ctx: Ctx) -> Response:
    return ctx.render("projects.html", projects=reads(ctx).projects(), page="projects")


def _package(ctx: Ctx) -> tuple[ProjectInfo, PackageInfo]:
    source = ctx.form if ctx.form is not None else ctx.request.query_params
    names = [str(source.get(k, "")).strip() for k in ("folder", "project", "package")]
    if not all(names):
        raise BadInput("choose a package: folder, project and package are needed")
    return reads(ctx).package(*names)


def run_form(ctx: Ctx) -> Response:
    project, package = _package(ctx)
    return ctx.render(
        "run.html", project=project, package=package, workers=ctx.so.workers(), page="projects"
    )


def run_start(ctx: Ctx) -> Response:
    project, package = _package(ctx)
    parameters = _parameters(ctx, project, package)
    workers = (
        [w for w in ctx.form.getlist("workers") if isinstance(w, str) and w] if ctx.form else []
    )
    retry_count = _int(ctx.field("retry_count", "0"), "retry count", minimum=0)
    execution_id = ctx.so.create_execution(
        project.folder,
        project.name,
        package.name,
        parameters=parameters,
        workers=workers,
        caller_name=ctx.user.name,
    )
    started = ctx.so.start(execution_id, retry_count)
    ctx.audit("execution.start", str(execution_id))
    ctx.flash(f"execution {execution_id} created and started")
    if started.warning:
        ctx.flash(started.warning, "warning")
    return ctx.redirect(f"/executions/{execution_id}")


def _parameters(ctx: Ctx, project: ProjectInfo, package: PackageInfo) -> dict[str, Any]:
    """The form's values, checked against the declared types as the CLI's are, before
    anything is written; an empty field leaves the default."""
    values: dict[str, Any] = {}
    for prefix, specs in (("$Project::", project.parameters), ("$Package::", package.parameters)):
        for spec in specs:
            text = ctx.field(f"{prefix}{spec.name}")
            if not text:
                if spec.required and spec.default is None:
                    raise BadInput(f"parameter {spec.name} is required")
                continue
            try:
                values[f"{prefix}{spec.name}"] = spec.coerce(text)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
    return values


# -- masters and charts --------------------------------------------------------------------


def masters(ctx: Ctx) -> Response:
    properties = ctx.so.master_properties()
    last = properties.get("LAST_ONLINE_TIME", "")
    seen: datetime | None = None
    try:
        seen = datetime.fromisoformat(last) if last else None
    except ValueError:
        seen = None
    now = reads(ctx).now()
    lease = ctx.so.leader_lease()
    return ctx.render(
        "masters.html",
        properties=sorted(properties.items()),
        last_seen=seen,
        silent_s=(now - seen).total_seconds() if seen else None,
        instances=ctx.so.masters(),
        no_leader=lease.holder is None or lease.lapsed,
        page="masters",
    )


def charts_window(ctx: Ctx) -> tuple[int, charts.Window]:
    hours = _int(ctx.request.query_params.get("hours", "3"), "hours", minimum=1)
    if hours > 48:
        raise BadInput("hours is at most 48")
    now = reads(ctx).now()
    return hours, charts.Window(now - timedelta(hours=hours), now)


def charts_page(ctx: Ctx) -> Response:
    hours, window = charts_window(ctx)
    catalog = reads(ctx)
    context: dict[str, Any] = {
        "hours": hours,
        "per_minute": Markup(  # noqa: S704  # built by charts.py, which escapes every text
            charts.executions_per_minute(catalog.ended_since(window.start), window)
        ),
        "latency": Markup(  # noqa: S704
            charts.dispatch_latency(catalog.latencies_since(window.start), window)
        ),
        "timeline": Markup(  # noqa: S704
            charts.attempts_timeline(catalog.attempts_since(window.start), window)
        ),
        "page": "charts",
    }
    if ctx.fragment:
        return ctx.render("_charts.html", **context)
    return ctx.render("charts.html", **context)


# -- helpers -------------------------------------------------------------------------------


def _int(text: str, name: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{name} must be a whole number, not {text!r}") from None
    if value < minimum:
        raise BadInput(f"{name} must be {minimum} or more, not {value}")
    return value


def _optional_int(text: str | None, name: str) -> int | None:
    return None if text in (None, "") else _int(str(text), name, minimum=0)


def register_filters(env: Environment) -> None:
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["seconds"] = _seconds
    env.globals["MASK"] = MASK


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return f"{age((datetime.now(UTC) - moment).total_seconds())} ago"


def _seconds(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    return f"{((end or datetime.now(UTC)) - start).total_seconds():.1f} s"
