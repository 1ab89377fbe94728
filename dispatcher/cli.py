"""The ``scaleout`` command: the operator's tool and the composition root.

Settings are loaded here, once (``--config`` TOML, then ``SCALEOUT_*`` variables, then
flags), and passed down; every subcommand calls :mod:`dispatcher.api`, or runs the master
or a worker in the foreground. Errors print one red line and a hint, never a traceback:
exit 2 for a usage error, 1 for anything else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.text import Text

from dispatcher import render
from dispatcher.api import ScaleOut, Started
from dispatcher.catalog.records import WorkerAgentRow
from dispatcher.errors import ScaleoutError
from dispatcher.settings import MasterSettings, SettingsError
from schemas.states import ExecutionStatus

out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error stays one line in a log


def opt(*names: str, env: str, help: str, **kwargs: Any) -> Any:
    """A typer option whose environment variable ``--help`` shows."""
    return typer.Option(*names, envvar=env, show_envvar=True, help=help, **kwargs)


JsonFlag = Annotated[bool, opt("--json", env="SCALEOUT_JSON", help="print JSON for scripts")]
TimeoutOpt = Annotated[
    float, opt("--timeout", env="SCALEOUT_WAIT_TIMEOUT", help="seconds --wait waits at most")
]
FolderOpt = Annotated[str, opt("--folder", env="SCALEOUT_FOLDER", help="catalog folder")]
RetryOpt = Annotated[
    int, opt("--retry-count", env="SCALEOUT_RETRY_COUNT", help="retries after a failure", min=0)
]
WaitOpt = Annotated[
    bool, opt("--wait", env="SCALEOUT_WAIT", help="start, wait; exit 1 unless it succeeds")
]
ExecutionId = Annotated[int, typer.Argument(help="the execution's id")]
WorkerId = Annotated[str, typer.Argument(help="the worker agent's id")]
app = typer.Typer(
    name="scaleout",
    help="Scale Out for Python: an SSISDB catalog, a master and workers over RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(help="Create or upgrade the SSISDB catalog.", no_args_is_help=True)
executions_app = typer.Typer(help="Create, start, stop and watch executions.", no_args_is_help=True)
workers_app = typer.Typer(help="Register and manage worker agents.", no_args_is_help=True)
schemas_app = typer.Typer(help="The wire protocol's JSON Schemas.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(executions_app, name="executions")
app.add_typer(workers_app, name="workers")
app.add_typer(schemas_app, name="schemas")


@dataclass(frozen=True, slots=True)
class Globals:
    config: Path | None
    catalog_url: str | None
    broker_url: str | None

    def master_settings(self) -> MasterSettings:
        overrides: dict[str, Any] = {}
        if self.catalog_url:
            overrides["catalog"] = {"url": self.catalog_url}
        if self.broker_url:
            overrides["broker"] = {"url": self.broker_url}
        return MasterSettings.load(self.config, **overrides)


@app.callback()
def _globals(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        opt(
            "--config",
            env="SCALEOUT_CONFIG",
            help="TOML settings file (sections \\[master] and \\[worker])",
        ),
    ] = None,
    catalog_url: Annotated[
        str | None,
        opt("--catalog-url", env="SCALEOUT_CATALOG__URL", help="SQLAlchemy URL of the catalog"),
    ] = None,
    broker_url: Annotated[
        str | None,
        opt("--broker-url", env="SCALEOUT_BROKER__URL", help="amqps:// (or loopback amqp://) URL"),
    ] = None,
) -> None:
    ctx.obj = Globals(config, catalog_url, broker_url)


@contextlib.contextmanager
def session(ctx: typer.Context) -> Iterator[ScaleOut]:
    globals_: Globals = ctx.obj
    with ScaleOut.open(globals_.master_settings()) as so:
        yield so


def say(message: str, style: str = "") -> None:
    err.print(Text(message, style=style))


def emit(value: object, as_json: bool, human: RenderableType | str) -> None:
    """``value`` as JSON for scripts, else ``human`` for people."""
    if as_json:
        render.print_json(out, value)
    else:
        out.print(Text(human) if isinstance(human, str) else human)


# -- catalog -------------------------------------------------------------------------------


def _init_catalog(ctx: typer.Context) -> None:
    with session(ctx) as so, err.status("Bringing the catalog's schema up to date..."):
        revision = so.init_catalog()
    url = ctx.obj.master_settings().catalog.redacted_url
    out.print(Text(f"catalog {url} is at revision {revision}"))


@catalog_app.command("init")
def catalog_init(ctx: typer.Context) -> None:
    """Create the catalog's tables (Alembic upgrade to head; safe to repeat)."""
    _init_catalog(ctx)


@catalog_app.command("upgrade")
def catalog_upgrade(ctx: typer.Context) -> None:
    """Upgrade the catalog's schema to this version's (Alembic)."""
    _init_catalog(ctx)


# -- deploy --------------------------------------------------------------------------------


@app.command("deploy")
def deploy(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="a project folder (with manifest.json) or a .zip")],
    folder: FolderOpt,
    project: Annotated[
        str | None,
        opt("--project", env="SCALEOUT_PROJECT", help="project name (default: the manifest's)"),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Deploy a project (SSIS deploy_project): a new version unless the bytes are unchanged."""
    with session(ctx) as so, err.status(f"Deploying {path}..."):
        result = so.deploy(path, folder, project)
    what = "deployed" if result.created else "unchanged"
    emit(
        result,
        as_json,
        f"{result.folder_name}/{result.project_name} {what}: version {result.project_lsn}, "
        f"sha256 {result.content_hash[:12]}",
    )


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
        row = so.wait(execution_id, timeout)
    emit(row, as_json, render.execution_detail(row))
    if row.status is not ExecutionStatus.SUCCEEDED:
        raise typer.Exit(1)


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
        int, opt("--max-task-count", env="SCALEOUT_MAX_TASK_COUNT", help="packages at once", min=1)
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
    _show_worker(row, as_json, "added")


def _show_worker(row: WorkerAgentRow, as_json: bool, what: str) -> None:
    state = "enabled" if row.is_enabled else "disabled"
    emit(row, as_json, f"worker {row.worker_agent_id} {what} ({state})")


@workers_app.command("list")
def workers_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Worker agents: online or offline, enabled, running tasks, last seen."""
    with session(ctx) as so:
        rows = so.workers()
    emit(rows, as_json, render.workers_table(rows))


@workers_app.command("show")
def workers_show(ctx: typer.Context, worker_id: WorkerId, as_json: JsonFlag = False) -> None:
    """One worker agent."""
    with session(ctx) as so:
        row = so.worker(worker_id)
    emit(row, as_json, render.workers_table([row]))


@workers_app.command("enable")
def workers_enable(ctx: typer.Context, worker_id: WorkerId, as_json: JsonFlag = False) -> None:
    """Enable a worker agent: it gets tasks."""
    with session(ctx) as so:
        _show_worker(so.enable_worker(worker_id), as_json, "enabled")


@workers_app.command("disable")
def workers_disable(ctx: typer.Context, worker_id: WorkerId, as_json: JsonFlag = False) -> None:
    """Disable (drain) a worker agent: no new tasks; running ones finish."""
    with session(ctx) as so:
        _show_worker(so.disable_worker(worker_id), as_json, "disabled")


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
        _show_worker(so.set_worker(worker_id, name, value), as_json, f"{name} set")


@workers_app.command("delete")
def workers_delete(ctx: typer.Context, worker_id: WorkerId) -> None:
    """Delete a worker agent (refused while it holds tasks: disable it first)."""
    with session(ctx) as so:
        so.delete_worker(worker_id)
    out.print(Text(f"worker {worker_id} deleted"))


# -- services ------------------------------------------------------------------------------

LogLevel = Annotated[
    str, opt("--log-level", env="SCALEOUT_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR")
]


@app.command("master")
def master(ctx: typer.Context, log_level: LogLevel = "INFO") -> None:
    """Run the Scale Out Master in the foreground until SIGTERM or Ctrl-C."""
    from dispatcher.catalog import Catalog  # noqa: PLC0415  # keep `--help` fast
    from dispatcher.logs import configure_logging  # noqa: PLC0415
    from dispatcher.service import MasterService  # noqa: PLC0415

    settings: MasterSettings = ctx.obj.master_settings()
    configure_logging(level=log_level, folder=settings.log_folder, name="master")
    catalog = Catalog.for_master(settings)
    try:
        code = MasterService(settings, catalog).run()
    finally:
        catalog.close()
    raise typer.Exit(code)


@app.command("worker")
def worker(
    ctx: typer.Context,
    worker_id: Annotated[
        str | None, opt("--id", env="SCALEOUT_WORKER_ID", help="this worker's id (AgentId)")
    ] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Run a Scale Out Worker in the foreground until SIGTERM or Ctrl-C."""
    from consumers.agent.agent import run_worker  # noqa: PLC0415
    from consumers.agent.settings import WorkerSettings  # noqa: PLC0415
    from dispatcher.logs import configure_logging  # noqa: PLC0415

    globals_: Globals = ctx.obj
    overrides: dict[str, Any] = {"worker_id": worker_id}
    if globals_.broker_url:
        overrides["broker"] = {"url": globals_.broker_url}
    settings = WorkerSettings.load(globals_.config, **overrides)
    configure_logging(level=log_level, name=f"worker-{settings.worker_id}")
    raise typer.Exit(run_worker(settings))


@schemas_app.command("export")
def schemas_export(
    folder: Annotated[Path, typer.Argument(help="where to write one .json file per message")],
) -> None:
    """Write the wire protocol's JSON Schemas, for workers written in other languages."""
    from schemas.export import export_json_schemas  # noqa: PLC0415

    written = export_json_schemas(folder)
    out.print(Text(f"wrote {len(written)} schemas to {folder}"))


@app.command("demo")
def demo(
    ctx: typer.Context,
    root: Annotated[
        Path, opt("--root", env="SCALEOUT_DEMO_ROOT", help="runs go to ROOT/<timestamp>/")
    ] = Path("demo-run"),
    certs: Annotated[
        Path,
        opt("--certs", env="SCALEOUT_DEMO_CERTS", help="TLS node certificates (amqps:// only)"),
    ] = Path("/var/tmp/scaleout-tls/certs"),  # noqa: S108  # deploy/local/tls-node.sh's home
    timeout: Annotated[
        float, opt("--timeout", env="SCALEOUT_DEMO_TIMEOUT", help="seconds for the 20 executions")
    ] = 45.0,
) -> None:
    """A one-box cluster: a master and two workers run 20 executions of the example."""
    from dispatcher.demo import DemoOptions, run_demo  # noqa: PLC0415

    broker_url: str | None = ctx.obj.broker_url
    raise typer.Exit(run_demo(DemoOptions(root, broker_url, certs, timeout), out, err))


# -- entry point ---------------------------------------------------------------------------


def fail(message: str, hint: str = "") -> None:
    line = Text("error: ", style="bold red")
    line.append(message, style="red")
    err.print(line)
    if hint:
        err.print(Text(f"hint: {hint}", style="dim"))


def _one_line(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()]
    return f"invalid settings: {'; '.join(parts)}"


def main(argv: list[str] | None = None) -> None:
    """The console script: run the app, turn our errors into one line and an exit code."""
    # Operator commands print their own warnings; library log lines would repeat them.
    # `scaleout master` and `scaleout worker` replace this with JSON logs.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, prog_name="scaleout")
    except ScaleoutError as exc:
        fail(str(exc), exc.hint)
        sys.exit(1)
    except SettingsError as exc:
        fail(str(exc), "see the settings table in the README")
        sys.exit(1)
    except ValidationError as exc:
        fail(_one_line(exc), "check the SCALEOUT_* variables and the --config file")
        sys.exit(1)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        fail("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
